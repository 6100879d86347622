import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from maskrcnn.config import BackboneConfig
from maskrcnn.modeling.backbone import ResNet
from maskrcnn.modeling.fpn import FPN
from maskrcnn.structures import ShapeSpec


class StubTrunk(nn.Module):
    """Returns the maps it is given: the FPN alone under test."""

    def __init__(self, channels, strides):
        super().__init__()
        self.shapes = {f"res{i + 2}": ShapeSpec(c, s) for i, (c, s) in enumerate(zip(channels, strides))}

    def output_shape(self):
        return self.shapes

    def forward(self, maps):
        return dict(zip(self.shapes, maps))


def test_fpn_matches_torchvision():
    torch.manual_seed(0)
    channels = (16, 32, 64, 128)
    reference = FeaturePyramidNetwork(list(channels), 24, extra_blocks=LastLevelMaxPool())
    ours = FPN(StubTrunk(channels, (4, 8, 16, 32)), 24)
    with torch.no_grad():
        for index in range(4):
            ours.lateral[index].weight.copy_(reference.inner_blocks[index][0].weight)
            ours.lateral[index].bias.copy_(reference.inner_blocks[index][0].bias.normal_())
            ours.output[index].weight.copy_(reference.layer_blocks[index][0].weight)
            ours.output[index].bias.copy_(reference.layer_blocks[index][0].bias.normal_())
    # odd sizes exercise the nearest upsampling to a size that is not exactly 2x
    features = [torch.randn(2, c, 50 // 2**i + 1, 37 // 2**i + 1) for i, c in enumerate(channels)]
    expected = list(reference({str(i): f for i, f in enumerate(features)}).values())
    pyramid = ours.pyramid(features)
    assert len(pyramid) == 5
    for ours_level, reference_level in zip(pyramid, expected):
        torch.testing.assert_close(ours_level, reference_level)
    assert pyramid[4].shape[-2:] == ((pyramid[3].shape[-2] + 1) // 2, (pyramid[3].shape[-1] + 1) // 2)


def test_output_shape_names_strides_and_channels_from_the_trunk():
    shape = FPN(StubTrunk((8, 16, 32), (8, 16, 32)), 12).output_shape()
    assert shape == {
        "p2": ShapeSpec(12, 8),
        "p3": ShapeSpec(12, 16),
        "p4": ShapeSpec(12, 32),
        "p5": ShapeSpec(12, 64),
    }


def test_forward_returns_the_maps_output_shape_describes():
    config = BackboneConfig(stage_blocks=(1, 1, 1, 1), stage_channels=(16, 32, 64, 128), stem_channels=8)
    backbone = FPN(ResNet(config), 24).eval()
    image = torch.rand(1, 3, 128, 192)
    with torch.no_grad():
        features = backbone(image)
    assert list(features) == ["p2", "p3", "p4", "p5", "p6"]
    for name, spec in backbone.output_shape().items():
        assert features[name].shape == (1, spec.channels, 128 // spec.stride, 192 // spec.stride), name
