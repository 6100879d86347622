"""Normalization layers for the trunk."""

import math

import torch
from torch import Tensor, nn


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
