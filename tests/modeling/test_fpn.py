import torch
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from maskrcnn.modeling.fpn import FPN


def test_fpn_matches_torchvision():
    torch.manual_seed(0)
    channels = (16, 32, 64, 128)
    reference = FeaturePyramidNetwork(list(channels), 24, extra_blocks=LastLevelMaxPool())
    ours = FPN(channels, 24)
    with torch.no_grad():
        for index in range(4):
            ours.lateral[index].weight.copy_(reference.inner_blocks[index][0].weight)
            ours.lateral[index].bias.copy_(reference.inner_blocks[index][0].bias.normal_())
            ours.output[index].weight.copy_(reference.layer_blocks[index][0].weight)
            ours.output[index].bias.copy_(reference.layer_blocks[index][0].bias.normal_())
    # odd sizes exercise the nearest upsampling to a size that is not exactly 2x
    features = [torch.randn(2, c, 50 // 2**i + 1, 37 // 2**i + 1) for i, c in enumerate(channels)]
    expected = list(reference({str(i): f for i, f in enumerate(features)}).values())
    pyramid = ours(features)
    assert len(pyramid) == 5
    for ours_level, reference_level in zip(pyramid, expected):
        torch.testing.assert_close(ours_level, reference_level)
    assert pyramid[4].shape[-2:] == ((pyramid[3].shape[-2] + 1) // 2, (pyramid[3].shape[-1] + 1) // 2)
