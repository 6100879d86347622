"""Box arithmetic on absolute xyxy boxes (x1, y1, x2, y2 in pixels)."""

import torch
from torch import Tensor

_WIDE_DTYPES = (torch.float32, torch.float64, torch.int64)


def _wide(boxes: Tensor) -> Tensor:
    """boxes in a type in which differences and products of coordinates do not overflow.

    A 200-pixel int8 extent wraps around, a degenerate uint8 box (x2 < x1) gets a huge
    width, a float16 area overflows beyond about 256 x 256 pixels and bfloat16 rounds a
    100 x 120 one to 12032: integers are widened to int64, float16 and bfloat16 to float32.
    """
    if boxes.dtype in _WIDE_DTYPES:
        return boxes
    return boxes.float() if boxes.dtype.is_floating_point else boxes.long()


def box_area(boxes: Tensor) -> Tensor:
    """boxes: (N, 4) xyxy -> (N,) area; int64 for integer boxes, float32 for float16/bfloat16."""
    boxes = _wide(boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def clip_boxes(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Clip (..., 4) xyxy boxes to an image of size (height, width)."""
    height, width = image_size
    if boxes.dtype not in _WIDE_DTYPES:
        # clamp() rejects a bound its type cannot hold (an 800-pixel image for int8 boxes);
        # no coordinate of that type can exceed its largest value anyway.
        info = torch.finfo(boxes.dtype) if boxes.dtype.is_floating_point else torch.iinfo(boxes.dtype)
        height, width = min(height, info.max), min(width, info.max)
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices of the (N, 4) boxes whose width and height are both at least min_size."""
    boxes = _wide(boxes)
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return torch.where((widths >= min_size) & (heights >= min_size))[0]


def pairwise_iou(boxes: Tensor, others: Tensor) -> Tensor:
    """boxes (..., G, 4), others (P, 4) xyxy -> (..., G, P) intersection over union.

    Computed as `box_area` is (integers in int64, float16/bfloat16 in float32); the result
    is float32 for integer and 16-bit boxes.
    """
    boxes, others = _wide(boxes), _wide(others)
    area = box_area(boxes.reshape(-1, 4)).reshape(boxes.shape[:-1])
    other_area = box_area(others)
    top_left = torch.maximum(boxes[..., :, None, :2], others[:, :2])
    bottom_right = torch.minimum(boxes[..., :, None, 2:], others[:, 2:])
    size = (bottom_right - top_left).clamp(min=0)
    inter = size[..., 0] * size[..., 1]
    return inter / (area[..., None] + other_area - inter)
