"""Normalization layers for the trunk."""

import math

import torch
from torch import Tensor, nn

from maskrcnn.choices import NORMS
from maskrcnn.fast_path_switch import fast_paths_enabled, ran
from maskrcnn.modeling.weight_cache import derived_weight
from maskrcnn.ops.conv import conv2d


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters: y = x * scale + shift.

    Detection batches are too small (2 images per device) to estimate batch
    statistics, so a pre-trained trunk keeps its ImageNet statistics.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def scale_and_shift(self) -> tuple[Tensor, Tensor]:
        """(C,) scale and shift the layer applies."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return scale, shift

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, C, H, W)."""
        scale, shift = self.scale_and_shift()
        return x * scale[None, :, None, None] + shift[None, :, None, None]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written by BatchNorm carry a step counter this layer has no use for.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def conv_norm(conv: nn.Conv2d, norm: nn.Module, x: Tensor) -> Tensor:
    """norm(conv(x)), with a frozen norm folded into the convolution's weights.

    A frozen norm is an affine map per output channel, so scaling the (small) weights
    replaces a multiply-add over the (large) activations: one pass over memory fewer
    in the forward and in the backward. Within an inference pass the folded weights are
    computed once (see weight_cache).
    """
    # Fast paths off: the layers as they are, no folding and no cached weights.
    if not fast_paths_enabled() or not isinstance(norm, FrozenBatchNorm2d):
        return norm(conv(x))
    weight, bias = derived_weight(norm, "_folded_conv", lambda: _fold(conv, norm))
    ran("frozen_norm_fold")
    return conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _fold(conv: nn.Conv2d, norm: "FrozenBatchNorm2d") -> tuple[Tensor, Tensor]:
    scale, shift = norm.scale_and_shift()
    weight = conv.weight * scale.to(conv.weight.dtype)[:, None, None, None]
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return weight, bias.to(conv.weight.dtype)


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm (same parameters and state dict) with a faster CPU backward on narrow
    channels-last maps.

    PyTorch's channels-last GroupNorm backward handles maps of 32 or fewer channels at
    about half the speed of the computation below (a 4x32x112x144 map: 6.9 vs 2.8 ms);
    from 64 channels on the native kernel is as fast or faster, and is used.
    """

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, C, H, W). A bfloat16/float16 map with float32 parameters (autocast) is
        normalised in float32, and the output is float32."""
        low_precision = x.dtype in (torch.bfloat16, torch.float16)
        if low_precision and self.weight is not None and self.weight.dtype == torch.float32:
            x = x.float()
        if not fast_paths_enabled():  # fast paths off: PyTorch's own forward and backward
            return super().forward(x)
        if (
            torch.is_grad_enabled()
            and x.device.type == "cpu"
            and x.dim() == 4
            and x.shape[1] <= 32
            and x.dtype == torch.float32
            and self.weight is not None
            and self.weight.dtype == torch.float32
            and x.is_contiguous(memory_format=torch.channels_last)
            and not x.is_contiguous()
        ):
            ran("group_norm_backward")
            return _ChannelsLastGroupNorm.apply(x, self.weight, self.bias, self.num_groups, self.eps)
        return super().forward(x)


class _ChannelsLastGroupNorm(torch.autograd.Function):
    """Group norm of a channels-last (N, C, H, W) map: the native forward, and a backward
    from two batched matrix products and two fused multiply-adds over the map."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float) -> Tensor:
        num, channels, height, width = x.shape
        y, mean, rstd = torch.ops.aten.native_group_norm(
            x, weight, bias, num, channels, height * width, groups, eps
        )
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.groups = groups
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight, mean, rstd = ctx.saved_tensors
        num, channels, height, width = x.shape
        per_group = channels // ctx.groups
        grad = grad.contiguous(memory_format=torch.channels_last)
        x_rows = x.permute(0, 2, 3, 1).reshape(num, height * width, channels)
        grad_rows = grad.permute(0, 2, 3, 1).reshape(num, height * width, channels)
        # Per (image, channel) sums of dy and of dy * x. As matrix products they read each
        # map once and build no (N, HW, C) temporary; for the second only the diagonal of
        # the small (C, C) product is used.
        sum_dy = torch.bmm(x_rows.new_ones(num, 1, height * width), grad_rows)[:, 0]
        sum_dy_x = torch.bmm(grad_rows.transpose(1, 2), x_rows).diagonal(dim1=1, dim2=2)
        channel_mean = mean.repeat_interleave(per_group, 1)  # (N, C)
        channel_rstd = rstd.repeat_interleave(per_group, 1)
        sum_dy_xhat = channel_rstd * (sum_dy_x - channel_mean * sum_dy)
        grad_weight = sum_dy_xhat.sum(0)
        grad_bias = sum_dy.sum(0)
        # dx = rstd * w * dy + q * x + k, with q and k per (image, group)
        count = per_group * height * width
        mean_dy = (weight * sum_dy).view(num, ctx.groups, per_group).sum(2) / count
        mean_dy_xhat = (weight * sum_dy_xhat).view(num, ctx.groups, per_group).sum(2) / count
        q = (-rstd * rstd * mean_dy_xhat).repeat_interleave(per_group, 1)
        k = (rstd * (rstd * mean_dy_xhat * mean - mean_dy)).repeat_interleave(per_group, 1)
        grad_x = torch.addcmul(k[:, None, :], grad_rows, (channel_rstd * weight)[:, None, :])
        grad_x.addcmul_(x_rows, q[:, None, :])
        grad_x = grad_x.view(num, height, width, channels).permute(0, 3, 1, 2)
        return grad_x, grad_weight, grad_bias, None, None


def make_norm(kind: str, channels: int, eps: float) -> nn.Module:
    """kind: "frozen_bn", "bn" (trainable BatchNorm) or "gn" (GroupNorm, 32 groups, fewer for
    narrow layers so that the group count divides the channels)."""
    if kind == "frozen_bn":
        return FrozenBatchNorm2d(channels, eps=eps)
    if kind == "bn":
        return nn.BatchNorm2d(channels, eps=eps)
    if kind == "gn":
        return GroupNorm(math.gcd(32, channels), channels, eps=eps)
    raise ValueError(f"backbone.norm must be one of {', '.join(NORMS)}, got {kind!r}")
