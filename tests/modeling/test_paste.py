"""Mask pasting: the same masks as torchvision's paste, or as detectron2's (grid_sample at the pixel
centres), eager (box by box) and traced (all at once)."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import paste_masks_in_image

from maskrcnn.modeling.paste import paste_masks


def masks_and_boxes(count=40, size=28, seed=0):
    generator = torch.Generator().manual_seed(seed)
    masks = torch.rand(count, size, size, generator=generator)
    corners = torch.rand(count, 2, generator=generator) * torch.tensor([140.0, 110.0]) - 20
    sides = torch.rand(count, 2, generator=generator) * 90 + 0.5
    boxes = torch.cat((corners, corners + sides), dim=1)  # some stick out of the image
    boxes[0] = torch.tensor([10.0, 10.0, 10.2, 10.2])  # thinner than a pixel
    return masks, boxes


def test_eager_paste_equals_torchvision():
    masks, boxes = masks_and_boxes()
    # torchvision's paste fails for a box whose grown corner leaves the image on the left or top
    boxes[:, :2] = boxes[:, :2].clamp(min=5.0)
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 0.2)
    expected = paste_masks_in_image(masks[:, None], boxes, (100, 120), padding=1)[:, 0] > 0.5
    pasted = paste_masks(masks, boxes, (100, 120))
    assert pasted.dtype == torch.bool and pasted.shape == expected.shape
    assert expected.any(dim=(1, 2)).sum() > 30
    assert (pasted != expected).sum().item() <= 0.0001 * expected.numel()


def test_traced_paste_equals_the_eager_paste_at_other_counts_and_sizes():
    masks, boxes = masks_and_boxes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace, which the ONNX export also uses
        traced = torch.jit.trace(
            lambda m, b, image: paste_masks(m, b, image.shape[-2:]), (masks, boxes, torch.zeros(100, 120))
        )
    other_masks, other_boxes = masks_and_boxes(count=13, seed=1)
    for m, b, size in [(masks, boxes, (100, 120)), (other_masks, other_boxes, (90, 150))]:
        expected = paste_masks(m, b, size)
        pasted = traced(m, b, torch.zeros(size))
        assert pasted.shape == expected.shape
        assert (pasted != expected).sum().item() <= 0.0001 * expected.numel()


def test_no_masks_gives_an_empty_result_of_the_image_size():
    pasted = paste_masks(torch.zeros(0, 28, 28), torch.zeros(0, 4), (30, 40))
    assert pasted.shape == (0, 30, 40) and pasted.dtype == torch.bool


def grid_sample_paste(masks, boxes, image_size):
    """The detectron2 paste written directly: every pixel centre of the image mapped into its box
    as grid_sample's [-1, 1] coordinates, the mask sampled there (bilinear, zeros outside,
    align_corners=False). Returns (K, H, W) float values."""
    height, width = image_size
    x0, y0, x1, y1 = (boxes[:, i, None] for i in range(4))
    ys = (torch.arange(height, dtype=torch.float32) + 0.5 - y0) / (y1 - y0) * 2 - 1  # (K, H)
    xs = (torch.arange(width, dtype=torch.float32) + 0.5 - x0) / (x1 - x0) * 2 - 1  # (K, W)
    grid = torch.stack(
        (xs[:, None, :].expand(-1, height, -1), ys[:, :, None].expand(-1, -1, width)), dim=3
    )  # (K, H, W, 2) as (x, y)
    return F.grid_sample(masks[:, None], grid, mode="bilinear", align_corners=False)[:, 0]


def agrees_with(pasted, values, threshold, tolerance=1e-5):
    """pasted (bool) is values >= threshold wherever values are not within `tolerance` of it
    (float rounding may tip those either way)."""
    clear = (values - threshold).abs() > tolerance
    return bool(torch.equal(pasted[clear], (values >= threshold)[clear]))


def test_detectron2_paste_equals_grid_sample_at_the_pixel_centres():
    masks, boxes = masks_and_boxes()
    boxes[1] = torch.tensor([-30.0, -25.0, 150.0, 130.0])  # larger than the image
    size = (100, 120)
    for threshold in (0.5, 0.2):
        values = grid_sample_paste(masks, boxes, size)
        pasted = paste_masks(masks, boxes, size, threshold, mode="detectron2")
        assert pasted.dtype == torch.bool and pasted.shape == (len(masks), *size)
        assert agrees_with(pasted, values, threshold)
        assert pasted.any(dim=(1, 2)).sum() > 30
        # not torchvision's paste: the box is neither grown nor snapped to whole pixels
        assert (pasted != paste_masks(masks, boxes, size, threshold)).sum() > 100


def test_detectron2_paste_traced_equals_grid_sample_at_other_counts_and_sizes():
    masks, boxes = masks_and_boxes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(
            lambda m, b, image: paste_masks(m, b, image.shape[-2:], mode="detectron2"),
            (masks, boxes, torch.zeros(100, 120)),
        )
    other_masks, other_boxes = masks_and_boxes(count=13, seed=1)
    for m, b, size in [(masks, boxes, (100, 120)), (other_masks, other_boxes, (90, 150))]:
        pasted = traced(m, b, torch.zeros(size))
        assert pasted.shape == (len(m), *size)
        assert agrees_with(pasted, grid_sample_paste(m, b, size), 0.5)


def test_an_unknown_paste_mode_is_refused():
    with pytest.raises(ValueError, match="torchvision, detectron2"):
        paste_masks(torch.zeros(1, 28, 28), torch.tensor([[0.0, 0, 5, 5]]), (10, 10), mode="nearest")
