"""Feature Pyramid Network: P2-P5 from res2-res5 by a top-down path, and P6."""

import torch.nn.functional as F
from torch import Tensor, nn

from maskrcnn.ops.conv import Conv2d


class FPN(nn.Module):
    """Lateral 1x1 convs, nearest-neighbour top-down sums, 3x3 output convs; P6 subsamples P5.

    forward: [C2, C3, C4, C5] -> [P2, P3, P4, P5, P6], all with `channels` channels,
    strides 4, 8, 16, 32, 64.
    """

    def __init__(self, in_channels: tuple[int, ...], channels: int = 256):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, kernel_size=1) for c in in_channels)
        self.output = nn.ModuleList(Conv2d(channels, channels, kernel_size=3, padding=1) for _ in in_channels)
        for conv in [*self.lateral, *self.output]:
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)
        self.out_channels = channels
        self.strides = (4, 8, 16, 32, 64)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        top_down = self.lateral[-1](features[-1])
        pyramid = [self.output[-1](top_down)]
        for level in range(len(features) - 2, -1, -1):
            lateral = self.lateral[level](features[level])
            upsampled = F.interpolate(top_down, size=lateral.shape[-2:], mode="nearest")
            # in place (the lateral conv's backward does not need its output): one buffer fewer
            top_down = lateral.add_(upsampled)
            pyramid.insert(0, self.output[level](top_down))
        # P6 exists only to give the RPN's largest anchors a coarser grid.
        pyramid.append(F.max_pool2d(pyramid[-1], kernel_size=1, stride=2))
        return pyramid
