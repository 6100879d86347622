"""Normalization layers for the trunk."""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskrcnn.modeling.weight_cache import derived_weight


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
    in the forward and in the backward. Under no_grad the folded weights are cached
    until the conv or the norm changes.
    """
    if not isinstance(norm, FrozenBatchNorm2d):
        return norm(conv(x))
    sources = (conv.weight, conv.bias, norm.weight, norm.bias, norm.running_mean, norm.running_var)
    weight, bias = derived_weight(norm, "_folded_conv", sources, lambda: _fold(conv, norm))
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _fold(conv: nn.Conv2d, norm: "FrozenBatchNorm2d") -> tuple[Tensor, Tensor]:
    scale, shift = norm.scale_and_shift()
    weight = conv.weight * scale.to(conv.weight.dtype)[:, None, None, None]
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return weight, bias.to(conv.weight.dtype)


def make_norm(kind: str, channels: int, eps: float) -> nn.Module:
    """kind: "frozen_bn", "bn" (trainable BatchNorm) or "gn" (GroupNorm, 32 groups, fewer for
    narrow layers so that the group count divides the channels)."""
    if kind == "frozen_bn":
        return FrozenBatchNorm2d(channels, eps=eps)
    if kind == "bn":
        return nn.BatchNorm2d(channels, eps=eps)
    if kind == "gn":
        return nn.GroupNorm(math.gcd(32, channels), channels, eps=eps)
    raise ValueError(f"backbone.norm must be 'frozen_bn', 'bn' or 'gn', got {kind!r}")
