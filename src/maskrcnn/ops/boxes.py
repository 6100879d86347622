"""Clipping absolute xyxy boxes (x1, y1, x2, y2 in pixels) to an image.

Areas, IoU and small-box removal are torchvision.ops'. Clipping is written here because
torchvision's `clip_boxes_to_image`, traced, makes its size argument a constant of the
graph (`torch.tensor(width)`): an exported model then clips every image to the example's
size. `clamp` with tensor bounds keeps the size a graph value.
"""

import torch
from torch import Tensor

_WIDE_DTYPES = (torch.float32, torch.float64, torch.int64)


def clip_boxes(boxes: Tensor, image_size) -> Tensor:
    """Clip (..., 4) xyxy boxes to an image of size (height, width): ints, or 0-dim tensors
    (traced sizes)."""
    height, width = image_size
    if boxes.dtype not in _WIDE_DTYPES:
        # clamp() rejects a bound its type cannot hold (an 800-pixel image for int8 boxes);
        # no coordinate of that type can exceed its largest value anyway.
        info = torch.finfo(boxes.dtype) if boxes.dtype.is_floating_point else torch.iinfo(boxes.dtype)
        height, width = min(height, info.max), min(width, info.max)
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)
