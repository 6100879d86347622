"""Shared handling of the RoI argument of roi_align / roi_pool."""

import torch
from torch import Tensor


def rois_as_tensor(boxes: Tensor | list[Tensor], dtype: torch.dtype, device: torch.device) -> Tensor:
    """Accept (K, 5) [batch_index, x1, y1, x2, y2] or a list of per-image (Ki, 4) xyxy boxes.

    Returns (K, 5) in `dtype` on `device`.
    """
    if isinstance(boxes, (list, tuple)):
        parts = []
        for index, image_boxes in enumerate(boxes):
            if image_boxes.dim() != 2 or image_boxes.shape[-1] != 4:
                raise ValueError(f"boxes[{index}] must have shape (K, 4), got {tuple(image_boxes.shape)}")
            batch_index = torch.full_like(image_boxes[:, :1], index)
            parts.append(torch.cat((batch_index, image_boxes), dim=1))
        if not parts:
            return torch.zeros((0, 5), dtype=dtype, device=device)
        boxes = torch.cat(parts, dim=0)
    if boxes.dim() != 2 or boxes.shape[-1] != 5:
        raise ValueError(
            f"boxes must have shape (K, 5) [batch_index, x1, y1, x2, y2], got {tuple(boxes.shape)}"
        )
    return boxes.to(dtype=dtype, device=device)


def zeros_in_graph(input: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Zeros of `shape` for RoIs that read no feature cell (none at all, or an empty map).

    Added to an empty sum of `input`, they stay in its graph: its gradient is then a zero
    tensor, as for RoIs that all fall outside the map, instead of backward() failing on an
    output that does not require grad. The empty slice reads nothing and copies nothing.
    """
    zeros = input.new_zeros(shape)
    return zeros + input[:0].sum() if input.requires_grad else zeros


def pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)
