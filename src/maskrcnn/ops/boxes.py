"""Box arithmetic on absolute xyxy boxes (x1, y1, x2, y2 in pixels)."""

import torch
from torch import Tensor


def box_area(boxes: Tensor) -> Tensor:
    """boxes: (N, 4) xyxy -> (N,) area."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def clip_boxes(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Clip (..., 4) xyxy boxes to an image of size (height, width)."""
    height, width = image_size
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices of the (N, 4) boxes whose width and height are both at least min_size."""
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return torch.where((widths >= min_size) & (heights >= min_size))[0]


def pairwise_iou(boxes: Tensor, others: Tensor) -> Tensor:
    """boxes (..., G, 4), others (P, 4) xyxy -> (..., G, P) intersection over union."""
    area = box_area(boxes.reshape(-1, 4)).reshape(boxes.shape[:-1])
    other_area = box_area(others)
    top_left = torch.maximum(boxes[..., :, None, :2], others[:, :2])
    bottom_right = torch.minimum(boxes[..., :, None, 2:], others[:, 2:])
    size = (bottom_right - top_left).clamp(min=0)
    inter = size[..., 0] * size[..., 1]
    return inter / (area[..., None] + other_area - inter)
