"""ResNet and ResNeXt trunks (stages res2-res5) with configurable normalization, and the
single-map backbones of the C4 and C5 models."""

import torch
from torch import Tensor, nn

from maskrcnn.config import BackboneConfig
from maskrcnn.modeling.norm import conv_norm, make_norm
from maskrcnn.ops.conv import Conv2d
from maskrcnn.structures import ShapeSpec

BLOCKS_PER_STAGE = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
# The stem divides by 4 and every stage after res2 halves again: the only statement of the
# strides; the FPN, RPN, anchors and poolers read them from `output_shape()`.
STAGE_STRIDES = (4, 8, 16, 32)


class Stem(nn.Module):
    """7x7 stride-2 conv, norm, ReLU, 3x3 stride-2 max pool: (N, in_channels, H, W) -> (N, C, H/4, W/4)."""

    def __init__(self, channels: int, norm: str, eps: float, in_channels: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, kernel_size=7, stride=2, padding=3, bias=False)
        self.norm = make_norm(norm, channels, eps)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(conv_norm(self.conv, self.norm, x).relu_())


class Shortcut(nn.Module):
    """Projection shortcut: 1x1 conv (with the block's stride) and norm."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str, eps: float):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)
        self.norm = make_norm(norm, out_channels, eps)

    def forward(self, x: Tensor) -> Tensor:
        return conv_norm(self.conv, self.norm, x)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand, plus the shortcut."""

    def __init__(
        self,
        in_channels: int,
        width: int,
        out_channels: int,
        stride: int,
        groups: int,
        stride_in_1x1: bool,
        norm: str,
        eps: float,
    ):
        super().__init__()
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_channels, width, 1, stride=stride_1x1, bias=False)
        self.norm1 = make_norm(norm, width, eps)
        self.conv2 = Conv2d(width, width, 3, stride=stride_3x3, padding=1, groups=groups, bias=False)
        self.norm2 = make_norm(norm, width, eps)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.norm3 = make_norm(norm, out_channels, eps)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = Shortcut(in_channels, out_channels, stride, norm, eps) if needs_projection else None

    def forward(self, x: Tensor) -> Tensor:
        out = conv_norm(self.conv1, self.norm1, x).relu_()
        out = conv_norm(self.conv2, self.norm2, out).relu_()
        out = conv_norm(self.conv3, self.norm3, out)
        identity = x if self.shortcut is None else self.shortcut(x)
        # In place: neither the conv nor the norm that produced `out` needs it for its
        # backward, and a fresh buffer of this size costs page faults as well as a pass.
        return out.add_(identity).relu_()


def make_stage(
    in_channels: int, out_channels: int, blocks: int, stride: int, width: int, config: BackboneConfig
) -> nn.Sequential:
    layers = []
    for index in range(blocks):
        layers.append(
            Bottleneck(
                in_channels if index == 0 else out_channels,
                width,
                out_channels,
                stride if index == 0 else 1,
                config.groups,
                config.stride_in_1x1,
                config.norm,
                config.norm_eps,
            )
        )
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """Bottleneck ResNet / ResNeXt trunk.

    forward: images (N, in_channels, H, W) -> {"res2": ..., "res5": ...} (or fewer, see `stages`),
    each (N, Cs, H / stride, W / stride) as `output_shape()` says: strides 4, 8, 16, 32 and
    channels `stage_channels` (256, 512, 1024, 2048).
    stages: how many of res2..res5 to build; the C4 variant builds 3 and uses res5 as its box head.
    in_channels: the image's channels (model.input.channels), 3 for RGB.
    """

    def __init__(self, config: BackboneConfig, stages: int = 4, in_channels: int = 3):
        super().__init__()
        blocks = config.stage_blocks or BLOCKS_PER_STAGE.get(config.depth)
        if blocks is None:
            raise ValueError(f"backbone.depth must be one of {sorted(BLOCKS_PER_STAGE)}, got {config.depth}")
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"backbone.stage_blocks needs 4 positive counts, got {blocks}")
        self.stem = Stem(config.stem_channels, config.norm, config.norm_eps, in_channels)
        self.stage_names = [f"res{i + 2}" for i in range(stages)]
        in_channels = config.stem_channels
        for index, name in enumerate(self.stage_names):
            out_channels = config.stage_channels[index]
            stride = 1 if index == 0 else 2
            stage = make_stage(
                in_channels, out_channels, blocks[index], stride, stage_width(index, config), config
            )
            self.add_module(name, stage)
            in_channels = out_channels
        self._output_shape = {
            name: ShapeSpec(config.stage_channels[index], STAGE_STRIDES[index])
            for index, name in enumerate(self.stage_names)
        }
        self.frozen_stages = freeze(self, config.freeze_at)

    def train(self, mode: bool = True) -> "ResNet":
        """Frozen stages stay in eval mode: with trainable BatchNorm elsewhere, their running
        statistics stay as fixed as their parameters."""
        super().train(mode)
        for name in self.frozen_stages:
            getattr(self, name).eval()
        return self

    def output_shape(self) -> dict[str, ShapeSpec]:
        """Channels and stride of each map `forward` returns, by name."""
        return dict(self._output_shape)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        x = self.stem(images)
        outputs = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            outputs[name] = x
        return outputs


class SingleMapBackbone(nn.Module):
    """The backbone of the C4 and C5 models: one map of a trunk, which the RPN and the RoI heads
    both read (the paper's section 3.1): res4 at stride 16 (C4, whose res5 runs per RoI as the
    box head) or res5 at stride 32 (C5, Table 2d).

    forward: images (N, C, H, W) -> {name: (N, Cs, H / stride, W / stride)}; `output_shape()`
    says the one name, its channels and stride. The trunk is `self.trunk`, as in `FPN`, so
    both kinds keep trunk weights under the same checkpoint keys.
    """

    def __init__(self, trunk: ResNet, name: str):
        super().__init__()
        shapes = trunk.output_shape()
        if name not in shapes:
            raise ValueError(f"the trunk has no map {name!r}; it has {', '.join(shapes)}")
        self.trunk = trunk
        self.name = name
        self._output_shape = {name: shapes[name]}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self._output_shape)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        # Channels-last, as FPN computes: the convolution kernels and RoIAlign are fastest there.
        maps = self.trunk(images.contiguous(memory_format=torch.channels_last))
        return {self.name: maps[self.name]}


def res5_stage(config: BackboneConfig) -> nn.Sequential:
    """res5 on its own, as the C4 box head runs it on pooled RoI features: (K, C4, S, S) ->
    (K, C5, S/2, S/2), with the trunk's blocks, widths and normalization (`freeze_at` 5 freezes it)."""
    blocks = config.stage_blocks or BLOCKS_PER_STAGE.get(config.depth)
    if blocks is None:
        raise ValueError(f"backbone.depth must be one of {sorted(BLOCKS_PER_STAGE)}, got {config.depth}")
    stage = make_stage(
        config.stage_channels[2], config.stage_channels[3], blocks[3], 2, stage_width(3, config), config
    )
    if config.freeze_at >= 5:
        for parameter in stage.parameters():
            parameter.requires_grad_(False)
    return stage


def stage_width(index: int, config: BackboneConfig) -> int:
    """Bottleneck width of stage res{index+2}: 64 * 2^index for ResNet, scaled for ResNeXt."""
    return config.groups * config.width_per_group * 2**index


def freeze(trunk: ResNet, freeze_at: int) -> tuple[str, ...]:
    """Stop gradients to the stem (freeze_at >= 1) and to res2..res{freeze_at} (freeze_at >= 2);
    returns the names of the frozen modules.

    The paper's recipe freezes the stem and res2: their ImageNet features are generic
    and training them with tiny detection batches gains nothing.
    """
    frozen = ("stem", *trunk.stage_names[: max(freeze_at - 1, 0)])[: max(freeze_at, 0)]
    for name in frozen:
        for parameter in getattr(trunk, name).parameters():
            parameter.requires_grad_(False)
    return frozen
