"""The other RoI feature extractors of the paper's Table 2c: RoIAlign with a max, RoIWarp, RoIWarp with a max.

Table 2c separates RoIAlign's two changes to RoIPool, (1) no rounding of the RoI or its bins and
(2) bilinear sampling, and crosses them with the bin's reduction (average or max):

- "align": RoIAlign, the paper's (ops/roi_align.py).
- "align_max": RoIAlign's samples, each bin taking their maximum instead of their mean.
- "warp": RoIWarp (MNC, Dai et al. 2016): the RoI rounded to the feature grid as RoIPool rounds
  it, then sampled and averaged as RoIAlign does. It isolates (1): bilinear sampling, but on a
  misaligned RoI.
- "warp_max": RoIWarp with the maximum of its samples.
- "pool": RoIPool (ops/roi_pool.py): rounded RoI and bins, max over whole cells.

They exist for that ablation: a model trained with each shows what alignment alone is worth.
Each function here has the signature and the (K, PH, PW, C) result of `roi_align_rows`, so
that `MultiScaleRoIPooler` can pick any of them by name (`poolers.POOLERS`).

The averaging kinds are `roi_align_rows` itself (on rounded RoIs for "warp"), with its fast
path, its torchvision fallback and its ONNX mapping. The max kinds interpolate every sample
as RoIAlign does (the same sample positions, the same bilinear taps, 0 beyond one cell outside
the map) but keep the samples apart: one weighted gather-sum of 4 taps per sample, then the
maximum over each bin's samples, whose backward sends each bin's gradient to the 4 taps of its
winning sample.
"""

import torch
from torch import Tensor

from maskrcnn.fast_path_switch import fast_paths_enabled, ran
from maskrcnn.ops._rois import pair, rois_as_tensor, zeros_in_graph
from maskrcnn.ops.roi_align import WeightedGather, _accumulation_dtype, roi_align_rows, roi_geometry
from maskrcnn.ops.roi_pool import round_half_away

# Elements gathered per chunk of RoIs by the max kinds (4 taps per sample): bounds the memory.
_MAX_CHUNK_ELEMENTS = 1 << 25


def warp_rows(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """RoIWarp: RoIPool's rounding of the RoI, then RoIAlign's bilinear samples, averaged per bin.

    input: (N, C, H, W); boxes: (K, 5) [batch_index, x1, y1, x2, y2] in image pixels, or a list
    of N (Ki, 4); output_size: (PH, PW); spatial_scale: feature cells per image pixel.
    The corners are rounded to cells, x1q = round(x1 * spatial_scale) half away from zero (as
    RoIPool rounds them), and the RoI is the continuous extent [x1q, x2q] x [y1q, y2q] of
    RoIAlign with aligned=False, widened to at least one cell: the result is exactly
    `roi_align_rows(input, quantized_rois(rois, spatial_scale), output_size, 1.0, sampling_ratio,
    aligned=False)` for the (K, 5) form `rois` of boxes. sampling_ratio: samples per bin along
    each axis, <= 0 for ceil(rounded extent / output size). aligned is ignored: RoIPool's
    rounding, not a half-pixel shift, is what places this RoI on the cells.
    Returns (K, PH, PW, C) contiguous, in input's dtype; zeros (and a zero feature gradient)
    for K = 0 or an empty map.
    """
    del aligned
    # [x1q, x2q] rather than RoIPool's inclusive cells x1q..x2q ([x1q, x2q + 1) as cell extents):
    # with RoIAlign's own coordinates (aligned=False: cell i's value sits at i) this is RoIPool's
    # rounding with nothing else changed, so "warp" differs from "align" by the rounding only (on
    # boxes whose corners are whole cells the two are equal); it is also the extent MNC's RoIWarp
    # forward samples (x2q - x1q wide).
    # roi_align_rows also dispatches: torchvision's roi_align when the fast paths are off or when
    # tracing (its ONNX RoiAlign), on the same rounded RoIs.
    coord_dtype = _coordinate_dtype(input.dtype)
    rois = quantized_rois(rois_as_tensor(boxes, coord_dtype, input.device), spatial_scale)
    return roi_align_rows(input, rois, output_size, 1.0, sampling_ratio, False)


def align_max_rows(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """RoIAlign taking the maximum of each bin's bilinear samples instead of their mean.

    Arguments as `roi_align_rows`, all honoured: the samples are RoIAlign's (aligned's half-pixel
    shift, the one-cell minimum extent without it, `sampling_ratio` samples per bin along each
    axis or ceil(extent / output size) for <= 0). A sample RoIAlign counts as 0 (more than one
    cell outside the map) enters the maximum as 0; a bin without samples (an adaptive grid of
    0, from an inverted RoI with aligned=True) is 0.
    Returns (K, PH, PW, C) contiguous, in input's dtype; zeros (and a zero feature gradient)
    for K = 0 or an empty map. The feature gradient of each bin goes to the 4 taps of its
    winning sample (of one of them, for tied samples); a winning sample outside the map passes
    none. Traced (ONNX export), sampling_ratio must be > 0 (a ValueError otherwise).
    """
    coord_dtype = _coordinate_dtype(input.dtype)
    rois = rois_as_tensor(boxes, coord_dtype, input.device)
    return _max_of_samples(input, rois, output_size, spatial_scale, sampling_ratio, aligned, "align_max")


def warp_max_rows(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """RoIWarp taking the maximum of each bin's samples: `align_max_rows` on the RoIs `warp_rows`
    rounds, with their extent [x1q, x2q] (aligned=False rules; the argument aligned is ignored).

    Arguments as `warp_rows`. Returns (K, PH, PW, C) contiguous, in input's dtype; zeros (and a
    zero feature gradient) for K = 0 or an empty map. Traced, sampling_ratio must be > 0.
    """
    del aligned
    coord_dtype = _coordinate_dtype(input.dtype)
    rois = quantized_rois(rois_as_tensor(boxes, coord_dtype, input.device), spatial_scale)
    return _max_of_samples(input, rois, output_size, 1.0, sampling_ratio, False, "warp_max")


def quantized_rois(rois: Tensor, spatial_scale: float) -> Tensor:
    """(K, 5) [batch_index, x1, y1, x2, y2] in image pixels -> (K, 5) with the corners in feature
    cells, each round(corner * spatial_scale) half away from zero (C's round(), as RoIPool)."""
    return torch.cat((rois[:, :1], round_half_away(rois[:, 1:] * spatial_scale)), dim=1)


def axis_samples(
    start: Tensor, length: Tensor, bins: int, grid: Tensor, samples: int, size: int | Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """RoIAlign's samples along one axis, kept apart (`roi_align.axis_sampling` folds each bin's
    samples into one average).

    start, length: (K,) RoI start and extent in feature cells; grid: (K,) samples per bin;
    samples: an int >= every grid (the padded sample count G); size: the map's extent along this
    axis (an int, or a 0-dim tensor when traced).
    Returns index (K, bins, G, 2) int64, the low and high cell each sample reads; weight
    (K, bins, G, 2), their bilinear weights, zero for a sample more than one cell outside the
    map (its value is 0); present (K, bins, G) bool, False for padding beyond the RoI's grid.
    """
    # The positions and the edge rules are axis_sampling's, written in the same order so that a
    # sample lands on the same float as RoIAlign's.
    bin_size = (length / bins)[:, None, None]
    step = torch.arange(samples, device=start.device, dtype=start.dtype)[None, None, :]
    bin_index = torch.arange(bins, device=start.device, dtype=start.dtype)[None, :, None]
    grid_f = grid.to(start.dtype)[:, None, None]
    coord = start[:, None, None] + bin_index * bin_size + (step + 0.5) * bin_size / grid_f.clamp(min=1)

    inside = (coord >= -1.0) & (coord <= size)
    coord = coord.clamp(min=0)
    low = coord.floor()
    # A sample in the last cell (or beyond) reads that cell alone.
    at_edge = low >= size - 1
    low = torch.where(at_edge, (size - 1) * torch.ones_like(low), low)
    coord = torch.where(at_edge, low, coord)
    high = torch.where(at_edge, low, low + 1)
    frac = coord - low

    keep = inside.to(start.dtype)
    index = torch.stack((low, high), dim=-1).long()
    weight = torch.stack(((1 - frac) * keep, frac * keep), dim=-1)
    return index, weight, (step < grid_f).expand(-1, bins, -1)


def _max_of_samples(
    input: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
    kind: str,
) -> Tensor:
    """input (N, C, H, W), rois (K, 5) -> (K, PH, PW, C): each bin the maximum of RoIAlign's
    samples of the RoI, with RoIAlign's rules (see `align_max_rows`)."""
    out_h, out_w = pair(output_size)
    _, channels, height, width = input.shape
    tracing = torch.jit.is_tracing()
    if tracing and sampling_ratio <= 0:
        # The adaptive grid's size is read from the RoIs: a trace would fix it to the example's.
        raise ValueError(
            f"exporting a model with roi_heads.pooler={kind!r} needs roi_heads.sampling_ratio > 0 "
            f"(got {sampling_ratio}): its samples per bin must not depend on the RoIs"
        )
    # Traced, the sizes are tensors of the graph and the RoI count varies: no branch on them (an
    # empty level of a traced model pools through the general code, which handles K = 0).
    if not tracing and (rois.shape[0] == 0 or height == 0 or width == 0 or channels == 0):
        return zeros_in_graph(input, (rois.shape[0], out_h, out_w, channels))

    x1, y1, roi_w, roi_h = roi_geometry(rois, spatial_scale, aligned)
    if sampling_ratio > 0:
        grid_h = torch.full_like(roi_h, sampling_ratio, dtype=torch.int64)
        grid_w = grid_h
        samples_h = samples_w = sampling_ratio
    else:
        grid_h = torch.ceil(roi_h / out_h).long()
        grid_w = torch.ceil(roi_w / out_w).long()
        samples_h = max(int(grid_h.max()), 1)
        samples_w = max(int(grid_w.max()), 1)
    # Only an adaptive grid pads: RoIs with fewer samples than the largest.
    padded = sampling_ratio <= 0

    rows, row_weights, row_present = axis_samples(y1, roi_h, out_h, grid_h, samples_h, height)
    cols, col_weights, col_present = axis_samples(x1, roi_w, out_w, grid_w, samples_w, width)
    batch_offset = rois[:, 0].long() * (height * width)

    dtype = _accumulation_dtype(input.dtype)
    features = input.permute(0, 2, 3, 1).reshape(-1, channels)
    per_roi = out_h * out_w * samples_h * samples_w * channels
    chunks = [slice(None)] if tracing else _roi_chunks(rois.shape[0], per_roi)
    outputs = []
    with torch.autocast(input.device.type, enabled=False):
        features = features.to(dtype)
        for part in chunks:
            # (k, PH, PW, Gy, Gx, 2, 2): the 4 cells each sample of each bin reads, and their weights
            index = (
                batch_offset[part, None, None, None, None, None, None]
                + rows[part][:, :, None, :, None, :, None] * width
                + cols[part][:, None, :, None, :, None, :]
            )
            weight = (
                row_weights[part][:, :, None, :, None, :, None]
                * col_weights[part][:, None, :, None, :, None, :]
            )
            values = _sample_values(features, index.reshape(-1, 4), weight.reshape(-1, 4).to(dtype))
            values = values.reshape(-1, out_h, out_w, samples_h * samples_w, channels)
            if padded:
                present = row_present[part][:, :, None, :, None] & col_present[part][:, None, :, None, :]
                present = present.reshape(-1, out_h, out_w, samples_h * samples_w, 1)
                values = values.masked_fill(~present, float("-inf"))
            # max, not amax: the gradient goes to one winning sample, not shared among ties.
            pooled = values.max(dim=3).values
            if padded:
                pooled = pooled.masked_fill(~present.any(dim=3), 0.0)
            outputs.append(pooled)
    pooled = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=0)
    return pooled.to(input.dtype)


def _roi_chunks(num_rois: int, samples_per_roi: int) -> list[slice]:
    """The samples' values (K, PH, PW, Gy * Gx, C) are the big tensor (4 times that as gathered
    taps without the fast path): pooled a few RoIs at a time, at most one chunk of them exists at
    once (the maximum keeps only its (k, PH, PW, C) indices for the backward)."""
    per_roi = samples_per_roi * (1 if fast_paths_enabled() else 4)
    chunk = max(1, _MAX_CHUNK_ELEMENTS // per_roi)
    return [slice(begin, begin + chunk) for begin in range(0, num_rois, chunk)]


def _sample_values(features: Tensor, index: Tensor, weights: Tensor) -> Tensor:
    """features (cells, C), index (R, 4), weights (R, 4) -> (R, C): each sample's bilinear value."""
    if fast_paths_enabled() and not torch.jit.is_tracing():
        ran("roi_sample_gather")
        return WeightedGather.apply(features, index, weights)
    # Plain PyTorch ops (the fast paths off): autograd's own backward of the gather. Traced, the
    # same ops become ONNX Gather, Mul and ReduceSum (an autograd.Function would trace as its
    # forward's embedding_bag, exported as a Loop over samples).
    # (-1 for the count, not for C: ONNX's Reshape cannot infer a -1 beside a 0, a level without RoIs.)
    taps = features.index_select(0, index.reshape(-1)).reshape(-1, index.shape[1], features.shape[1])
    return (taps * weights[..., None]).sum(dim=1)


def _coordinate_dtype(dtype: torch.dtype) -> torch.dtype:
    # As roi_align: float64 maps get float64 RoIs, every other one float32 (bfloat16 corners
    # would be off by whole cells).
    return torch.float64 if dtype == torch.float64 else torch.float32
