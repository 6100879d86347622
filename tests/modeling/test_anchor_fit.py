"""Anchor sizes fitted to the training boxes, and the share of boxes a set of anchors covers."""

import pytest
import torch

from maskrcnn.data.coco_annotations import ImageRecord, Instance
from maskrcnn.modeling.anchor_fit import (
    anchor_strides,
    box_sizes,
    coverage,
    fit_anchor_sizes,
    small_object_note,
)

DEFAULT = (32, 64, 128, 256, 512)
RATIOS = (0.5, 1.0, 2.0)


def test_coverage_counts_boxes_with_an_anchor_at_iou_one_half():
    # centred: a 32 px square: IoU 1; 24 px: 0.5625; 20 px: 0.39; a 32 x 8 box: 0.25
    boxes = torch.tensor([[32.0, 32.0], [24.0, 24.0], [20.0, 20.0], [32.0, 8.0]])
    assert coverage(boxes, [32], [1.0]) == pytest.approx(0.5)
    assert coverage(boxes[:0], [32], [1.0]) == 1.0
    # on a grid of stride 16 the 24 px square is half a stride off in 5 of the 9 offsets:
    # x and y 0.25 off: IoU (20 x 20) / (2 x 576 - 400) = 0.53; any 0.5 off: under 0.5
    assert coverage(boxes[1:2], [32], [1.0], strides=[16]) == pytest.approx(4 / 9)


def test_an_anchor_too_small_for_its_grid_covers_less_than_it_would_centred():
    boxes = torch.full((10, 2), 8.0)
    assert coverage(boxes, [8], [1.0]) == 1.0
    # 8 px anchors 16 px apart (C4's grid): a box between two of them is missed
    assert coverage(boxes, [8], [1.0], strides=[16]) < 0.5
    assert anchor_strides("fpn", (32, 64, 128, 256, 512)) == (4, 8, 16, 32, 64)
    assert anchor_strides("c4", (32, 64)) == (16, 16)


def test_nuclei_of_10_to_20_px_get_anchors_that_cover_them():
    generator = torch.Generator().manual_seed(0)
    sides = 10 + 10 * torch.rand(500, generator=generator)
    boxes = torch.stack((sides, sides * (0.8 + 0.4 * torch.rand(500, generator=generator))), dim=1)
    fitted, before, after = fit_anchor_sizes(boxes, DEFAULT, RATIOS, anchor_strides("fpn", DEFAULT))
    assert before < 0.1 and after >= 0.9
    assert 6 <= fitted[0] <= 20 and all(b == 2 * a for a, b in zip(fitted, fitted[1:]) if a >= 4)
    note = small_object_note(boxes, min_size=256)
    assert note is not None and "min_size" in note


def test_boxes_the_default_anchors_cover_keep_the_default():
    boxes = torch.tensor([[s, s] for s in (30.0, 60.0, 100.0, 200.0, 400.0)])
    assert fit_anchor_sizes(boxes, DEFAULT, RATIOS, anchor_strides("fpn", DEFAULT)) == (DEFAULT, 1.0, 1.0)
    assert small_object_note(boxes, min_size=800) is None


def test_box_sizes_are_measured_at_the_test_time_resize():
    # a 100 x 50 image resized to short side 100 (factor 2): a 10 x 20 box becomes 20 x 40
    instance = Instance(label=1, box=(5.0, 5.0, 15.0, 25.0), segmentation=[])
    records = [ImageRecord(1, "a.png", 50, 100, (instance,), ()), ImageRecord(2, "b.png", 50, 100, (), ())]
    assert box_sizes(records, min_size=100, max_size=1000).tolist() == [[20.0, 40.0]]
