"""Convolution with a weight gradient built from matrix products, for channels-last maps.

oneDNN's CPU weight gradient of a convolution on channels-last maps can run far below the
machine's matrix throughput: on a 2-core AVX2 EPYC a 3x3, 256-channel conv on two 200x272
maps took 4.5 s against 1.0 s for the same gradient on NCHW maps. The weight gradient is a
sum over the kernel's taps of (output gradient)^T x (shifted input): with both maps
zero-padded to a common row width, each tap's shifted input is a contiguous run of rows,
and the gradient is kh*kw plain matrix products (1.06 s on that conv). A strided conv is
split into stride_h * stride_w phase images of the input, each read at stride 1.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskrcnn.fast_path_switch import fast_paths_enabled, ran

# The products pay off on large maps with many channels; on small ones oneDNN's own
# channels-last gradient is as fast or faster. Measured on a 2-core AVX2 EPYC (weight gradient
# alone, products vs native, ms): (4, 64, 56, 72) 12.0 vs 14.2 and R50's 256-channel FPN maps
# down to (2, 256, 50, 68) 58 vs 116, but (4, 64, 28, 36) 3.4 vs 2.3, (4, 16, 56, 72) 1.4 vs
# 0.8 and 64 RoIs of (64, 14, 14) 11.5 vs 9.1. So the products need at least MIN_ROWS padded
# rows (N * Hp * Wp) in all, MIN_CELLS of them per image and MIN_CHANNELS input channels.
MIN_ROWS = 4096
MIN_CELLS = 2048
MIN_CHANNELS = 64


def conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> Tensor:
    """F.conv2d; x (N, Ci, H, W), weight (Co, Ci, kh, kw) -> (N, Co, Ho, Wo).

    A float32 CPU training convolution (weight needing a gradient, no autocast) with a
    kernel larger than 1x1, dilation 1, one group and integer padding, on a channels-last
    map, gets its weight gradient from `weight_gradient`; everything else is F.conv2d.
    """
    if not fast_paths_enabled():  # fast paths off: PyTorch's own convolution and gradients
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    if _shift_gradient_applies(x, weight, stride, padding, dilation, groups):
        return _ShiftWeightGradConv.apply(x, weight, bias, _pair(stride), _pair(padding))
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def _pair(value) -> tuple:
    return (value, value) if isinstance(value, int) else tuple(value)


def _shift_gradient_applies(x, weight, stride, padding, dilation, groups) -> bool:
    if not (torch.is_grad_enabled() and weight.requires_grad and x.device.type == "cpu"):
        return False
    if x.dtype != torch.float32 or weight.dtype != torch.float32 or torch.is_autocast_enabled("cpu"):
        return False
    if isinstance(padding, str) or _pair(dilation) != (1, 1) or groups != 1:
        return False
    # A 1x1 kernel's native channels-last gradient is one product already (and the
    # strided one would pay for copying the whole map to read a quarter of it).
    if weight.shape[2] * weight.shape[3] == 1:
        return False
    if x.dim() != 4 or not x.is_contiguous(memory_format=torch.channels_last) or x.is_contiguous():
        return False
    pad_h, pad_w = _pair(padding)
    cells = (x.shape[2] + 2 * pad_h) * (x.shape[3] + 2 * pad_w)
    return x.shape[1] >= MIN_CHANNELS and cells >= MIN_CELLS and x.shape[0] * cells >= MIN_ROWS


def weight_gradient(
    grad: Tensor,
    x: Tensor,
    kernel: tuple[int, int],
    padding: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
) -> Tensor:
    """Weight gradient of a convolution: grad (N, Co, Ho, Wo), x (N, Ci, H, W) -> (Co, Ci, kh, kw),
    channels-last.

    The zero-padded input, its size rounded up to a multiple of the stride, is split into
    phase images of Hq x Wq cells: phase (a, b) holds padded cells (s_h u + a, s_w v + b).
    Output cell (n, r, c) reads, for tap (i, j), phase (i % s_h, j % s_w) at
    (r + i // s_h, c + j // s_w). With the gradient at the top-left of (N, Hq, Wq) zero
    rows, that is flat row + (i // s_h) * Wq + j // s_w: each tap is one product of the
    gradient rows with a phase's rows from that offset on. A shifted row that wraps past
    an image's edge meets a zero gradient row.
    """
    num, in_channels, height, width = x.shape
    out_channels = grad.shape[1]
    (kernel_h, kernel_w), (pad_h, pad_w), (stride_h, stride_w) = kernel, padding, stride
    cells_h = -(-(height + 2 * pad_h) // stride_h)
    cells_w = -(-(width + 2 * pad_w) // stride_w)
    rows = num * cells_h * cells_w
    x_padded = _padded_rows(x, pad_h, pad_w, cells_h * stride_h, cells_w * stride_w)
    phases = {
        (a, b): x_padded[:, a::stride_h, b::stride_w].reshape(rows, in_channels)
        for a in range(min(stride_h, kernel_h))
        for b in range(min(stride_w, kernel_w))
    }
    grad_rows = _padded_rows(grad, 0, 0, cells_h, cells_w).view(rows, out_channels)
    taps = []
    for i in range(kernel_h):
        for j in range(kernel_w):
            offset = (i // stride_h) * cells_w + j // stride_w
            phase = phases[i % stride_h, j % stride_w]
            taps.append(torch.mm(grad_rows[: rows - offset].t(), phase[offset:]))
    # (Co, kh * kw, Ci) holds the gradient in channels-last order: each tap is written as
    # whole rows, and the permuted view needs no copy for a channels-last weight.
    stacked = torch.stack(taps, dim=1).view(out_channels, kernel_h, kernel_w, in_channels)
    return stacked.permute(0, 3, 1, 2)


def _padded_rows(x: Tensor, top: int, left: int, height: int, width: int) -> Tensor:
    """x (N, C, h, w) channels-last -> (N, height, width, C) zeros with x at (top, left).
    Only the border is zeroed: the interior is written once."""
    num, channels, rows, cols = x.shape
    out = x.new_empty(num, height, width, channels)
    out[:, :top].zero_()
    out[:, top + rows :].zero_()
    out[:, top : top + rows, :left].zero_()
    out[:, top : top + rows, left + cols :].zero_()
    out[:, top : top + rows, left : left + cols] = x.permute(0, 2, 3, 1)
    return out


class _ShiftWeightGradConv(torch.autograd.Function):
    """The native convolution forward and input gradient; the weight gradient by
    `weight_gradient`."""

    @staticmethod
    def forward(
        ctx, x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int], padding: tuple[int, int]
    ) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad,
                x,
                weight,
                None,
                list(ctx.stride),
                list(ctx.padding),
                [1, 1],
                False,
                [0, 0],
                1,
                [True, False, False],
            )[0]
        if ctx.needs_input_grad[1]:
            grad_weight = weight_gradient(grad, x, weight.shape[2:], ctx.padding, ctx.stride)
            ran("conv_weight_gradient")
            grad_weight = _in_strides_of(weight, grad_weight)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum((0, 2, 3))
        return grad_x, grad_weight, grad_bias, None, None


def _in_strides_of(weight: Tensor, grad: Tensor) -> Tensor:
    """`grad` with exactly `weight`'s strides (a copy only when they differ).

    Autograd keeps a gradient whose strides differ from its parameter's only in dimensions
    of size 1, and DDP then copies it into its bucket view with a warning: "the same memory
    format" is not enough, the strides must be equal.
    """
    if grad.stride() == weight.stride():
        return grad
    return torch.empty_like(weight, memory_format=torch.preserve_format).copy_(grad)


class Conv2d(nn.Conv2d):
    """nn.Conv2d (same parameters and state dict) running `conv2d`."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.padding_mode != "zeros":
            return super()._conv_forward(input, weight, bias)
        return conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
