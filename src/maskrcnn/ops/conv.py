"""Convolution with a weight gradient built from matrix products, for channels-last maps.

oneDNN's CPU weight gradient of a stride-1 convolution on channels-last maps can run far
below the machine's matrix throughput: on a 2-core AVX2 EPYC a 3x3, 256-channel conv on
two 200x272 maps took 4.5 s against 1.0 s for the same gradient on NCHW maps. The weight
gradient is a sum over the kernel's taps of (output gradient)^T x (shifted input): with
both maps zero-padded to a common row width, each tap's shifted input is a contiguous run
of rows, and the gradient is kh*kw plain matrix products (1.06 s on that conv).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Below this many padded rows (N * Hp * Wp) the native kernel is as fast (a 4x64x28x36
# map gains 1.5 ms, 11 RoIs of 14x14 lose 0.6 ms).
MIN_ROWS = 4096


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

    A float32 CPU training convolution (weight needing a gradient, no autocast) with
    stride 1, dilation 1, one group and integer padding, on a channels-last map, gets its
    weight gradient from `weight_gradient`; everything else is F.conv2d.
    """
    if _shift_gradient_applies(x, weight, stride, padding, dilation, groups):
        pad = (padding, padding) if isinstance(padding, int) else tuple(padding)
        return _ShiftWeightGradConv.apply(x, weight, bias, pad)
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def _pair(value) -> tuple:
    return (value, value) if isinstance(value, int) else tuple(value)


def _shift_gradient_applies(x, weight, stride, padding, dilation, groups) -> bool:
    if not (torch.is_grad_enabled() and weight.requires_grad and x.device.type == "cpu"):
        return False
    if x.dtype != torch.float32 or weight.dtype != torch.float32 or torch.is_autocast_enabled("cpu"):
        return False
    if isinstance(padding, str) or _pair(stride) != (1, 1) or _pair(dilation) != (1, 1) or groups != 1:
        return False
    if x.dim() != 4 or not x.is_contiguous(memory_format=torch.channels_last) or x.is_contiguous():
        return False
    pad_h, pad_w = _pair(padding)
    return x.shape[0] * (x.shape[2] + 2 * pad_h) * (x.shape[3] + 2 * pad_w) >= MIN_ROWS


def weight_gradient(grad: Tensor, x: Tensor, kernel: tuple[int, int], padding: tuple[int, int]) -> Tensor:
    """Weight gradient of a stride-1 convolution: grad (N, Co, Ho, Wo), x (N, Ci, H, W)
    -> (Co, Ci, kh, kw).

    Both maps go into zero-padded (N, Hp, Wp, C) row buffers, the gradient at the top-left
    of its image's region. Output cell (n, r, c) reads input cell (n, r + i, c + j) for
    tap (i, j): in the flattened buffers that is row + i * Wp + j, so the tap's gradient
    is one product of the gradient rows with the input rows shifted by that offset. A
    shifted row that wraps past an image's edge meets a zero gradient row.
    """
    num, in_channels, height, width = x.shape
    out_channels, out_height, out_width = grad.shape[1:]
    (kernel_h, kernel_w), (pad_h, pad_w) = kernel, padding
    padded_h, padded_w = height + 2 * pad_h, width + 2 * pad_w
    rows = num * padded_h * padded_w
    x_rows = _padded_rows(x, pad_h, pad_w, padded_h, padded_w)
    grad_rows = _padded_rows(grad, 0, 0, padded_h, padded_w)
    x_rows, grad_rows = x_rows.view(rows, in_channels), grad_rows.view(rows, out_channels)
    taps = []
    for i in range(kernel_h):
        for j in range(kernel_w):
            offset = i * padded_w + j
            taps.append(torch.mm(grad_rows[: rows - offset].t(), x_rows[offset:]))
    return torch.stack(taps, dim=2).view(out_channels, in_channels, kernel_h, kernel_w)


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
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, 1, padding)

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
                [1, 1],
                list(ctx.padding),
                [1, 1],
                False,
                [0, 0],
                1,
                [True, False, False],
            )[0]
        if ctx.needs_input_grad[1]:
            grad_weight = weight_gradient(grad, x, weight.shape[2:], ctx.padding)
            grad_weight = grad_weight.contiguous(memory_format=_layout(weight))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum((0, 2, 3))
        return grad_x, grad_weight, grad_bias, None


def _layout(weight: Tensor) -> torch.memory_format:
    channels_last = weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


class Conv2d(nn.Conv2d):
    """nn.Conv2d (same parameters and state dict) running `conv2d`."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.padding_mode != "zeros":
            return super()._conv_forward(input, weight, bias)
        return conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
