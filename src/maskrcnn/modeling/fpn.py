"""Feature Pyramid Network: P2-P5 from res2-res5 by a top-down path, and P6."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskrcnn.ops.conv import Conv2d
from maskrcnn.structures import ShapeSpec

# P6 exists only to give the RPN's largest anchors a coarser grid; RoIs are pooled from P2-P5
# (FPN paper, section 4.2). This is the one statement of that rule.
RPN_ONLY_FEATURES = ("p6",)


class FPN(nn.Module):
    """A backbone: a trunk (e.g. `ResNet`) and the pyramid built on its maps.

    Lateral 1x1 convs, nearest-neighbour top-down sums, 3x3 output convs; P6 subsamples P5.
    forward: images (N, C, H, W) -> {"p2": ..., "p6": ...}: each trunk map resN gives pN with
    `channels` channels at the trunk map's stride, and p6 has twice p5's stride (see
    `output_shape()`; 4, 8, 16, 32, 64 on a ResNet).
    """

    def __init__(self, trunk: nn.Module, channels: int = 256):
        super().__init__()
        self.trunk = trunk
        trunk_shape = trunk.output_shape()
        self.in_features = tuple(trunk_shape)
        self.lateral = nn.ModuleList(
            nn.Conv2d(s.channels, channels, kernel_size=1) for s in trunk_shape.values()
        )
        self.output = nn.ModuleList(
            Conv2d(channels, channels, kernel_size=3, padding=1) for _ in trunk_shape.values()
        )
        for conv in [*self.lateral, *self.output]:
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)
        self._output_shape = {
            "p" + name.removeprefix("res"): ShapeSpec(channels, shape.stride)
            for name, shape in trunk_shape.items()
        }
        last = list(self._output_shape)[-1]
        top = int(last[1:]) + 1
        self._output_shape[f"p{top}"] = ShapeSpec(channels, self._output_shape[last].stride * 2)

    def output_shape(self) -> dict[str, ShapeSpec]:
        """Channels and stride of each pyramid level `forward` returns, by name, finest first."""
        return dict(self._output_shape)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """The pyramid is computed channels-last: the CPU and GPU convolution kernels are
        fastest there, and RoIAlign reads channels-last features directly."""
        trunk_maps = self.trunk(images.contiguous(memory_format=torch.channels_last))
        features = [trunk_maps[name] for name in self.in_features]
        return dict(zip(self._output_shape, self.pyramid(features)))

    def pyramid(self, features: list[Tensor]) -> list[Tensor]:
        """[C2, ..., C5] -> [P2, ..., P5, P6]."""
        top_down = self.lateral[-1](features[-1])
        pyramid = [self.output[-1](top_down)]
        for level in range(len(features) - 2, -1, -1):
            lateral = self.lateral[level](features[level])
            upsampled = F.interpolate(top_down, size=lateral.shape[-2:], mode="nearest")
            # in place (the lateral conv's backward does not need its output): one buffer fewer
            top_down = lateral.add_(upsampled)
            pyramid.insert(0, self.output[level](top_down))
        pyramid.append(F.max_pool2d(pyramid[-1], kernel_size=1, stride=2))
        return pyramid
