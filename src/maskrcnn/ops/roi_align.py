"""RoIAlign (Mask R-CNN, section 3) in plain PyTorch tensor operations.

Each output bin averages `grid` x `grid` bilinearly interpolated samples, with no
rounding of the RoI or bin edges. Bilinear interpolation and the bin average are
separable in y and x, so each RoI is described by two small weight tables: for
every output row, which feature rows it reads and with what weight, and the same
for columns. Their products list, for every output bin, the feature cells it reads
and their weights: one weighted gather-sum over the channels-last feature matrix
pools all RoIs at once.
"""

import warnings

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor

from maskrcnn.fast_path_switch import fast_paths_enabled, ran
from maskrcnn.ops._rois import pair, rois_as_tensor, zeros_in_graph

# PyTorch labels its CSR tensors "beta" on every first use; the operations used here
# (construction and CSR @ dense) are long-standing and tested.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)


def axis_sampling(start: Tensor, length: Tensor, bins: int, grid: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Interpolation taps along one axis for every RoI.

    start, length: (K,) RoI start and extent in feature cells; grid: (K,) samples per
    bin (0 means none); size: feature extent along this axis, an int or (K,) per RoI.
    Returns indices (K, bins, 2 * G) int64 and weights (K, bins, 2 * G) float, where G
    is the largest grid; the weights already hold the 1/grid of the bin average and
    are zero for padding samples and for samples more than one cell outside the map.
    """
    samples = max(int(grid.max().item()) if grid.numel() else 1, 1)
    bin_size = (length / bins)[:, None, None]
    step = torch.arange(samples, device=start.device, dtype=start.dtype)[None, None, :]
    bin_index = torch.arange(bins, device=start.device, dtype=start.dtype)[None, :, None]
    grid_f = grid.to(start.dtype)[:, None, None]
    if isinstance(size, Tensor):
        size = size.to(start.dtype)[:, None, None]
    coord = start[:, None, None] + bin_index * bin_size + (step + 0.5) * bin_size / grid_f.clamp(min=1)

    valid = (step < grid_f) & (coord >= -1.0) & (coord <= size)
    coord = coord.clamp(min=0)
    low = coord.floor()
    # A sample in the last cell (or beyond) reads that cell alone.
    at_edge = low >= size - 1
    low = torch.where(at_edge, (size - 1) * torch.ones_like(low), low)
    coord = torch.where(at_edge, low, coord)
    high = torch.where(at_edge, low, low + 1)
    frac = coord - low

    scale = valid.to(start.dtype) / grid_f.clamp(min=1)
    indices = torch.cat((low, high), dim=-1).long()
    weights = torch.cat(((1 - frac) * scale, frac * scale), dim=-1)
    return indices, weights


def roi_geometry(rois: Tensor, spatial_scale: float, aligned: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(K, 5) RoIs in image pixels -> their start x1, y1 and extent w, h (K,) each, in feature cells,
    as RoIAlign samples them: shifted by half a cell with `aligned`, at least one cell without."""
    offset = 0.5 if aligned else 0.0
    x1 = rois[:, 1] * spatial_scale - offset
    y1 = rois[:, 2] * spatial_scale - offset
    roi_w = rois[:, 3] * spatial_scale - offset - x1
    roi_h = rois[:, 4] * spatial_scale - offset - y1
    if not aligned:
        # The original RoIAlign forces degenerate RoIs to one cell.
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    return x1, y1, roi_w, roi_h


def roi_align(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """Pool a fixed-size feature map for each RoI by bilinear sampling.

    input: (N, C, H, W) features.
    boxes: (K, 5) [batch_index, x1, y1, x2, y2] in image pixels, or a list of N (Ki, 4) tensors.
    output_size: (PH, PW); spatial_scale: feature cells per image pixel (1/stride).
    sampling_ratio: samples per bin along each axis; <= 0 means ceil(RoI size / output size).
    aligned: shift by half a pixel so that box corners fall on pixel corners.
    Returns (K, C, PH, PW), channels-last in memory; all zeros for an empty map. With K = 0
    or an empty map the feature gradient is zero.
    """
    rows = roi_align_rows(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)
    return rows.permute(0, 3, 1, 2)


def roi_align_rows(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """`roi_align` (same arguments) with the result as a contiguous (K, PH, PW, C) tensor:
    the layout the matrix product produces, whose backward pass needs no transposing copy."""
    # Fast paths off: torchvision's kernel (`roi_align` comes here too). Traced as well: ours sizes
    # its sampling grid from the data, torchvision's has an ONNX mapping (RoiAlign).
    if not fast_paths_enabled() or torch.jit.is_tracing():
        return _torchvision_rows(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)
    ran("roi_align")
    out_h, out_w = pair(output_size)
    num_images, channels, height, width = input.shape
    coord_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    rois = rois_as_tensor(boxes, coord_dtype, input.device)
    num_rois = rois.shape[0]
    if num_rois == 0 or height == 0 or width == 0 or channels == 0:
        return zeros_in_graph(input, (num_rois, out_h, out_w, channels))

    x1, y1, roi_w, roi_h = roi_geometry(rois, spatial_scale, aligned)
    if sampling_ratio > 0:
        grid_h = torch.full_like(roi_h, sampling_ratio, dtype=torch.int64)
        grid_w = grid_h
    else:
        grid_h = torch.ceil(roi_h / out_h).long()
        grid_w = torch.ceil(roi_w / out_w).long()

    rows, row_weights = axis_sampling(y1, roi_h, out_h, grid_h, height)
    cols, col_weights = axis_sampling(x1, roi_w, out_w, grid_w, width)
    batch_offset = rois[:, 0].long() * (height * width)

    # (K, PH, PW, Ty, Tx): which feature cell each tap of each bin reads, and its weight
    index = (
        batch_offset[:, None, None, None, None]
        + rows[:, :, None, :, None] * width
        + cols[:, None, :, None, :]
    )
    weight = row_weights[:, :, None, :, None] * col_weights[:, None, :, None, :]
    taps = index.shape[-2] * index.shape[-1]
    # Every output bin is a weighted sum of a few feature cells (padding taps have weight 0
    # and a valid index): a weighted gather-sum over the rows of the channels-last feature
    # matrix, which embedding_bag does for all RoIs in one call without materialising the
    # gathered taps; autograd's backward scatters the gradient to the feature cells.
    features = input.permute(0, 2, 3, 1).reshape(num_images * height * width, channels)
    dtype = _accumulation_dtype(input.dtype)
    with torch.autocast(input.device.type, enabled=False):
        pooled = WeightedGather.apply(
            features.to(dtype), index.reshape(-1, taps), weight.reshape(-1, taps).to(dtype)
        )
    return pooled.to(input.dtype).reshape(num_rois, out_h, out_w, channels)


def _torchvision_rows(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    """`roi_align_rows` by torchvision.ops.roi_align, in the same (K, PH, PW, C) layout.

    Ours and torchvision's agree on the rest of the contract too: boxes are checked (and
    a list converted) as ours does, so a bad shape is the same ValueError, and an empty
    list works; bfloat16/float16 maps are pooled in float32 (torchvision's CPU kernel has
    no bfloat16; its autocast wrapper does the same); RoIs on an empty map are zeros
    (torchvision's CPU kernel crashes the process on one). Inverted boxes (x2 < x1) with
    aligned=True and sampling_ratio <= 0 remain torchvision's ValueError (ours gives 0).
    """
    out_h, out_w = pair(output_size)
    _, channels, height, width = input.shape
    dtype = _accumulation_dtype(input.dtype)
    rois = rois_as_tensor(boxes, dtype, input.device)
    if height == 0 or width == 0 or channels == 0:
        return zeros_in_graph(input, (rois.shape[0], out_h, out_w, channels))
    pooled = torchvision.ops.roi_align(
        input.to(dtype), rois, (out_h, out_w), spatial_scale, sampling_ratio, aligned
    )
    return pooled.to(input.dtype).permute(0, 2, 3, 1).contiguous()


class WeightedGather(torch.autograd.Function):
    """out[r] = sum_t weights[r, t] * features[index[r, t]]: (cells, C), (R, T), (R, T) -> (R, C).

    Forward is embedding_bag. Its own backward scatters R*T weighted rows one by one; here
    the taps are sorted by feature cell once, giving the transposed (cells x R) weight
    matrix in CSR form, and the feature gradient is one sparse-dense product (2-3x faster).
    """

    @staticmethod
    def forward(ctx, features: Tensor, index: Tensor, weights: Tensor) -> Tensor:
        ctx.save_for_backward(index, weights)
        ctx.num_cells = features.shape[0]
        return F.embedding_bag(index, features, per_sample_weights=weights, mode="sum")

    @staticmethod
    def backward(ctx, grad: Tensor):
        index, weights = ctx.saved_tensors
        num_rows, taps = index.shape
        cells = index.reshape(-1)
        # 32-bit keys sort in half the time of 64-bit ones (the sort dominated this backward).
        keys = cells.to(torch.int32) if ctx.num_cells < 2**31 else cells
        order = torch.argsort(keys, stable=True)
        rows = torch.div(order, taps, rounding_mode="floor")
        pointers = torch.zeros(ctx.num_cells + 1, dtype=torch.int64, device=index.device)
        torch.cumsum(torch.bincount(cells, minlength=ctx.num_cells), dim=0, out=pointers[1:])
        transposed = torch.sparse_csr_tensor(
            pointers,
            rows,
            weights.reshape(-1)[order],
            size=(ctx.num_cells, num_rows),
            check_invariants=False,
        )
        return transposed @ grad.contiguous(), None, None


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    # bfloat16/float16 features are pooled in float32: sums of 16 taps keep their precision.
    return torch.float64 if dtype == torch.float64 else torch.float32
