"""An independent RoIPool for the tests: a vectorised masked gather written from Fast R-CNN's
definition (rounded RoI, bins with floor/ceil edges, max over their cells; an empty bin is 0),
against which the op the project calls (torchvision's, through `maskrcnn.ops.roi_pool`) is checked."""

import torch
from torch import Tensor

from maskrcnn.ops._rois import pair, rois_as_tensor, zeros_in_graph
from maskrcnn.ops.roi_pool import round_half_away

_MAX_CHUNK_ELEMENTS = 1 << 25


def _bin_edges(start: Tensor, extent: Tensor, bins: int, size: int) -> tuple[Tensor, Tensor]:
    """start, extent: (K,) whole cells -> bin starts and ends (K, bins), clamped to [0, size]."""
    bin_size = extent.to(torch.float32)[:, None] / bins
    index = torch.arange(bins, device=start.device, dtype=torch.float32)[None, :]
    lower = torch.floor(index * bin_size).long() + start[:, None]
    upper = torch.ceil((index + 1) * bin_size).long() + start[:, None]
    return lower.clamp(0, size), upper.clamp(0, size)


def reference_roi_pool(
    input: Tensor,
    boxes,
    output_size,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """(N, C, H, W), (K, 5) or a list of (Ki, 4) -> (K, C, PH, PW); differentiable."""
    out_h, out_w = pair(output_size)
    num_images, channels, height, width = input.shape
    rois = rois_as_tensor(boxes, torch.float32, input.device)
    num_rois = rois.shape[0]
    if num_rois == 0 or height == 0 or width == 0 or channels == 0:
        return zeros_in_graph(input, (num_rois, channels, out_h, out_w))

    corners = round_half_away(rois[:, 1:] * spatial_scale).long()
    roi_w = (corners[:, 2] - corners[:, 0] + 1).clamp(min=1)
    roi_h = (corners[:, 3] - corners[:, 1] + 1).clamp(min=1)
    row_lo, row_hi = _bin_edges(corners[:, 1], roi_h, out_h, height)
    col_lo, col_hi = _bin_edges(corners[:, 0], roi_w, out_w, width)
    batch_offset = rois[:, 0].long() * (height * width)

    features = input.permute(0, 2, 3, 1).reshape(num_images * height * width, channels)
    max_rows = max(int((row_hi - row_lo).max()), 1)
    max_cols = max(int((col_hi - col_lo).max()), 1)
    row_step = torch.arange(max_rows, device=input.device)
    col_step = torch.arange(max_cols, device=input.device)
    per_roi = out_h * out_w * max_rows * max_cols * channels
    chunk = max(1, _MAX_CHUNK_ELEMENTS // per_roi)
    outputs = []
    for begin in range(0, num_rois, chunk):
        end = min(begin + chunk, num_rois)
        rows = row_lo[begin:end, :, None] + row_step  # (k, PH, Bh)
        cols = col_lo[begin:end, :, None] + col_step  # (k, PW, Bw)
        row_ok = rows < row_hi[begin:end, :, None]
        col_ok = cols < col_hi[begin:end, :, None]
        # (k, PH, PW, Bh, Bw): cells of each bin, padded to the largest bin
        inside = row_ok[:, :, None, :, None] & col_ok[:, None, :, None, :]
        index = (
            batch_offset[begin:end, None, None, None, None]
            + rows.clamp(max=height - 1)[:, :, None, :, None] * width
            + cols.clamp(max=width - 1)[:, None, :, None, :]
        )
        k = end - begin
        values = features[index.reshape(-1)].reshape(k, out_h, out_w, max_rows * max_cols, channels)
        values = values.masked_fill(~inside.reshape(k, out_h, out_w, -1, 1), float("-inf"))
        pooled = values.max(dim=3).values
        empty = ~inside.reshape(k, out_h, out_w, -1).any(dim=-1)
        outputs.append(pooled.masked_fill(empty[..., None], 0.0))
    return torch.cat(outputs, dim=0).permute(0, 3, 1, 2).contiguous()
