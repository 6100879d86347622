"""Mask pasting: the same masks as torchvision's paste, eager (box by box) and traced (all at once)."""

import warnings

import torch
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
