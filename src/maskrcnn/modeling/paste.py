"""Pasting each detection's m x m mask into its box of the image (the paper's inference)."""

import torch
import torch.nn.functional as F
from torch import Tensor

PASTE_BLOCK = 1 << 22


def paste_masks(masks: Tensor, boxes: Tensor, image_size, threshold: float = 0.5) -> Tensor:
    """Resample each m x m mask into its box and binarize it.

    masks: (K, M, M) probabilities; boxes: (K, 4) xyxy in the output image's pixels;
    image_size: (height, width), ints or traced sizes. Returns (K, H, W) bool.

    The mask is padded by one zero cell and its box grown by the same fraction, so that
    the bilinear resampling fades to zero at the mask's edge instead of stopping sharply.
    Boxes are snapped to whole pixels. Bilinear resizing is separable, so each pasted mask
    is Wy @ padded_mask @ Wx^T with (h, M+2) and (w, M+2) interpolation matrices, the
    samples F.interpolate(mode="bilinear", align_corners=False) would take resizing the
    padded mask to the grown box.

    Eager, each mask is resampled over its box alone (its window of the image). A traced
    graph cannot loop over a count it learns at run time, so there every mask is resampled
    over the whole image at once, with the same matrices (zero outside the box).
    """
    size = masks.shape[-1]
    padded = F.pad(masks, (1, 1, 1, 1))
    # Truncation towards zero, as an int() of each coordinate.
    grown = grow_boxes(boxes, (size + 2) / size).to(torch.int64)
    height, width = image_size
    if torch.jit.is_tracing():
        return _resample(padded, grown, 0, 0, height, width) > threshold
    result = torch.zeros((masks.shape[0], height, width), dtype=torch.bool, device=masks.device)
    windows = []  # (index, top, left, bottom, right) of each box inside the image
    for index, (x0, y0, x1, y1) in enumerate(grown.tolist()):
        left, top, right, bottom = max(x0, 0), max(y0, 0), min(x1 + 1, width), min(y1 + 1, height)
        if right > left and bottom > top:
            windows.append((index, top, left, bottom, right))
    # Boxes of similar size resampled together: one batched product per group, each group
    # at most PASTE_BLOCK values (its count times its largest window).
    windows.sort(key=lambda w: (w[3] - w[1]) * (w[4] - w[2]))
    begin = 0
    while begin < len(windows):
        end, rows, cols = begin, 0, 0
        while end < len(windows):
            rows_end = max(rows, windows[end][3] - windows[end][1])
            cols_end = max(cols, windows[end][4] - windows[end][2])
            if end > begin and (end - begin + 1) * rows_end * cols_end > PASTE_BLOCK:
                break
            end, rows, cols = end + 1, rows_end, cols_end
        group = windows[begin:end]
        index = torch.tensor([w[0] for w in group], device=masks.device)
        tops = torch.tensor([w[1] for w in group], device=masks.device)
        lefts = torch.tensor([w[2] for w in group], device=masks.device)
        pasted = _resample(padded[index], grown[index], tops, lefts, rows, cols) > threshold
        for values, (slot, top, left, bottom, right) in zip(pasted, group):
            result[slot, top:bottom, left:right] = values[: bottom - top, : right - left]
        begin = end
    return result


def grow_boxes(boxes: Tensor, factor: float) -> Tensor:
    """Scale (K, 4) xyxy boxes about their centres."""
    half_w = (boxes[:, 2] - boxes[:, 0]) * 0.5 * factor
    half_h = (boxes[:, 3] - boxes[:, 1]) * 0.5 * factor
    center_x = (boxes[:, 2] + boxes[:, 0]) * 0.5
    center_y = (boxes[:, 3] + boxes[:, 1]) * 0.5
    return torch.stack((center_x - half_w, center_y - half_h, center_x + half_w, center_y + half_h), dim=1)


def _resample(padded: Tensor, grown: Tensor, top, left, height, width) -> Tensor:
    """padded (K, M+2, M+2), grown (K, 4) int64 boxes -> (K, height, width) values of the
    resampled masks at image pixels top..top+height-1, left..left+width-1 (top, left: ints,
    or (K,) per mask)."""
    cells = padded.shape[-1]
    rows = _interpolation_matrix(grown[:, 1], grown[:, 3], top, height, cells)
    cols = _interpolation_matrix(grown[:, 0], grown[:, 2], left, width, cells)
    return rows @ padded @ cols.transpose(1, 2)


def _interpolation_matrix(start: Tensor, end: Tensor, first, extent, cells: int) -> Tensor:
    """(K, extent, cells) weights resizing `cells` values onto pixels start..end (inclusive),
    evaluated at pixels first..first+extent-1 (first: int or (K,)), as F.interpolate(mode="bilinear",
    align_corners=False) does; zero rows outside start..end."""
    length = torch.clamp(end - start + 1, min=1).to(torch.float32)[:, None]
    first = torch.as_tensor(first, device=start.device).reshape(-1, 1)
    pixel = torch.arange(extent, dtype=torch.int64, device=start.device)[None, :] + first
    local = (pixel - start[:, None]).to(torch.float32)
    source = torch.clamp((local + 0.5) * (cells / length) - 0.5, min=0.0)
    low = torch.clamp(source.floor(), max=cells - 1)
    high = torch.clamp(low + 1, max=cells - 1)
    fraction = source - low
    inside = ((pixel >= start[:, None]) & (pixel <= end[:, None])).to(torch.float32)
    cell = torch.arange(cells, dtype=torch.float32, device=start.device)[None, None, :]
    weights = (cell == low[..., None]).to(torch.float32) * (1 - fraction)[..., None]
    weights = weights + (cell == high[..., None]).to(torch.float32) * fraction[..., None]
    return weights * inside[..., None]
