"""Pasting each detection's m x m mask into its box of the image (the paper's inference)."""

import torch
import torch.nn.functional as F
from torch import Tensor

from maskrcnn.choices import MASK_PASTES

PASTE_BLOCK = 1 << 22


def paste_masks(
    masks: Tensor, boxes: Tensor, image_size, threshold: float = 0.5, mode: str = "torchvision"
) -> Tensor:
    """Resample each m x m mask into its box and binarize it.

    masks: (K, M, M) probabilities; boxes: (K, 4) xyxy in the output image's pixels;
    image_size: (height, width), ints or traced sizes. Returns (K, H, W) bool.

    mode (model.roi_heads.mask_paste, choices.MASK_PASTES):

    - "torchvision": the mask is padded by one zero cell and its box grown by the same
      fraction, so that the bilinear resampling fades to zero at the mask's edge instead of
      stopping sharply. Boxes are snapped to whole pixels. The samples are those
      F.interpolate(mode="bilinear", align_corners=False) takes resizing the padded mask to
      the grown box; a pixel is set where the value is > threshold.
    - "detectron2": each pixel centre (x + 0.5, y + 0.5) is mapped into the box (not grown,
      not snapped), the mask's cells being M equal parts of it, and the mask sampled there
      bilinearly with zeros past its edge (F.grid_sample(align_corners=False) of the mask);
      a pixel is set where the value is >= threshold.

    Bilinear resampling is separable, so each pasted mask is Wy @ padded_mask @ Wx^T with
    (h, M+2) and (w, M+2) interpolation matrices (the zero border of the padded mask is what
    the samples past the mask's edge read).

    Eager, each mask is resampled over the pixels its samples can reach (its window of the
    image). A traced graph cannot loop over a count it learns at run time, so there every
    mask is resampled over the whole image at once, with the same matrices (zero outside).
    """
    if mode not in MASK_PASTES:
        raise ValueError(f"mask paste mode must be one of {', '.join(MASK_PASTES)}, got {mode!r}")
    size = masks.shape[-1]
    padded = F.pad(masks, (1, 1, 1, 1))
    if mode == "torchvision":
        # Truncation towards zero, as an int() of each coordinate.
        placed = grow_boxes(boxes, (size + 2) / size).to(torch.int64)
        reach, axis = placed, _interpolation_matrix
    else:
        placed, axis = boxes.to(torch.float32), _sampling_matrix
        reach = _sampled_pixels(placed, size)
    height, width = image_size

    def binarize(values: Tensor) -> Tensor:
        return values > threshold if mode == "torchvision" else values >= threshold

    if torch.jit.is_tracing():
        return binarize(_resample(padded, placed, 0, 0, height, width, axis))
    result = torch.zeros((masks.shape[0], height, width), dtype=torch.bool, device=masks.device)
    windows = []  # (index, top, left, bottom, right) of each box inside the image
    for index, (x0, y0, x1, y1) in enumerate(reach.tolist()):
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
        pasted = binarize(_resample(padded[index], placed[index], tops, lefts, rows, cols, axis))
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


def _resample(padded: Tensor, placed: Tensor, top, left, height, width, axis) -> Tensor:
    """padded (K, M+2, M+2), placed (K, 4) boxes as `axis` takes them -> (K, height, width)
    values of the resampled masks at image pixels top..top+height-1, left..left+width-1 (top,
    left: ints, or (K,) per mask)."""
    cells = padded.shape[-1]
    rows = axis(placed[:, 1], placed[:, 3], top, height, cells)
    cols = axis(placed[:, 0], placed[:, 2], left, width, cells)
    return rows @ padded @ cols.transpose(1, 2)


def _interpolation_matrix(start: Tensor, end: Tensor, first, extent, cells: int) -> Tensor:
    """(K, extent, cells) weights resizing `cells` values onto pixels start..end (int64, inclusive),
    evaluated at pixels first..first+extent-1 (first: int or (K,)), as F.interpolate(mode="bilinear",
    align_corners=False) does; zero rows outside start..end."""
    length = torch.clamp(end - start + 1, min=1).to(torch.float32)[:, None]
    pixel = _pixels(first, extent, start.device)
    local = (pixel - start[:, None]).to(torch.float32)
    source = torch.clamp((local + 0.5) * (cells / length) - 0.5, min=0.0)
    inside = ((pixel >= start[:, None]) & (pixel <= end[:, None])).to(torch.float32)
    return _bilinear_weights(source, cells) * inside[..., None]


def _sampling_matrix(start: Tensor, end: Tensor, first, extent, cells: int) -> Tensor:
    """(K, extent, cells) weights sampling a zero-bordered mask of `cells` = M + 2 values at the
    centres of pixels first..first+extent-1 (first: int or (K,)), the M inner cells spanning
    start..end (float32 box coordinates), as F.grid_sample(align_corners=False) samples the mask
    itself with zero padding."""
    inner = cells - 2
    # A box of no width maps every pixel far outside the mask: zero weights, not a division by 0.
    length = torch.clamp(end - start, min=1e-6)[:, None]
    pixel = _pixels(first, extent, start.device).to(torch.float32)
    # The cell coordinate in the mask, plus 1 for the padded border cell; past the border the
    # samples read the border's zeros.
    source = (pixel + 0.5 - start[:, None]) * (inner / length) + 0.5
    return _bilinear_weights(source.clamp(min=0.0, max=cells - 1.0), cells)


def _sampled_pixels(boxes: Tensor, size: int) -> Tensor:
    """(K, 4) int64 inclusive pixel ranges (x0, y0, x1, y1) holding every pixel whose centre is
    less than one mask cell (box side / size) outside its box: the pixels `_sampling_matrix`
    can give a non-zero weight."""
    cell_w = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) / size
    cell_h = (boxes[:, 3] - boxes[:, 1]).clamp(min=0) / size
    margin = torch.stack((cell_w, cell_h, cell_w, cell_h), dim=1)
    low = (boxes[:, :2] - margin[:, :2]).floor() - 1
    high = (boxes[:, 2:] + margin[:, 2:]).ceil() + 1
    return torch.cat((low, high), dim=1).to(torch.int64)


def _pixels(first, extent, device) -> Tensor:
    """(K or 1, extent) int64 pixel indices first..first+extent-1 (first: int or (K,))."""
    first = torch.as_tensor(first, device=device).reshape(-1, 1)
    return torch.arange(extent, dtype=torch.int64, device=device)[None, :] + first


def _bilinear_weights(source: Tensor, cells: int) -> Tensor:
    """(K, extent) sample positions in [0, cells - 1] -> (K, extent, cells) linear interpolation
    weights between the two cells around each position."""
    low = torch.clamp(source.floor(), max=cells - 1)
    high = torch.clamp(low + 1, max=cells - 1)
    fraction = source - low
    cell = torch.arange(cells, dtype=torch.float32, device=source.device)[None, None, :]
    weights = (cell == low[..., None]).to(torch.float32) * (1 - fraction)[..., None]
    return weights + (cell == high[..., None]).to(torch.float32) * fraction[..., None]
