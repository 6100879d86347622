"""Boxes that clipping leaves without width: torchvision drops them before NMS and the
detection cap, detectron2 after both (`model.roi_heads.empty_boxes`), and its RPN only the
empty ones (`model.rpn.min_box_size: 0`)."""

from dataclasses import replace

import torch

import maskrcnn
from maskrcnn.modeling.rpn import _kept_by_size
from maskrcnn.testing import tiny_model_config


def box_head(empty_boxes: str, cap: int):
    config = tiny_model_config(("__background__", "a", "b"), detections_per_image=cap)
    config = replace(
        config, roi_heads=replace(config.roi_heads, empty_boxes=empty_boxes, score_threshold=0.05)
    )
    return maskrcnn.build_model(config).roi_heads.box_head


def candidates():
    """Four proposals, one class each (column 1): the two best clipped to no width."""
    boxes = torch.zeros(4, 3, 4)
    boxes[:, 1] = torch.tensor(
        [[50.0, 10.0, 50.0, 30.0], [60.0, 10.0, 60.0, 40.0], [0.0, 0.0, 20.0, 20.0], [30.0, 30.0, 45.0, 50.0]]
    )
    scores = torch.zeros(4, 3)
    scores[:, 1] = torch.tensor([0.9, 0.8, 0.7, 0.6])
    return boxes, scores


def test_torchvision_drops_empty_boxes_before_the_cap_and_detectron2_after_it():
    boxes, scores = candidates()
    torchvision = box_head("torchvision", cap=2).select(boxes, scores)
    detectron2 = box_head("detectron2", cap=2).select(boxes, scores)
    # torchvision: the empty two take no place, the next two fill the cap
    assert torchvision.scores.tolist() == [torch.tensor(0.7).item(), torch.tensor(0.6).item()]
    # detectron2: the empty two take the cap's places, then go: nothing is left
    assert len(detectron2.scores) == 0
    # with room for all four, both keep the same two boxes
    assert box_head("detectron2", cap=4).select(boxes, scores).scores.tolist() == torchvision.scores.tolist()


def test_an_rpn_min_size_of_zero_drops_only_empty_proposals():
    proposals = torch.tensor(
        [[0.0, 0.0, 0.0005, 5.0], [1.0, 1.0, 1.0, 4.0], [2.0, 2.0, 6.0, 2.0], [0.0, 0.0, 3.0, 3.0]]
    )
    assert _kept_by_size(proposals, 1e-3).tolist() == [3]  # torchvision: under 1e-3 px goes
    assert _kept_by_size(proposals, 0.0).tolist() == [0, 3]  # detectron2: a sliver stays
