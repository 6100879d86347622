"""The ResNet/ResNeXt trunk against torchvision's definitions, and freezing."""

import pytest
import torch
from torchvision.models import resnet50, resnet101, resnext50_32x4d

from maskrcnn.config import BackboneConfig
from maskrcnn.interop.init_weights import torchvision_resnet_to_trunk
from maskrcnn.modeling.backbone import ResNet
from maskrcnn.modeling.norm import FrozenBatchNorm2d
from maskrcnn.structures import ShapeSpec

TRUNK_PREFIX = "backbone.trunk."


def trunk_weights_from(reference: torch.nn.Module) -> dict:
    """torchvision classification ResNet weights under this project's trunk names (the model's
    `backbone.trunk.*` keys without that prefix: the keys of a `ResNet` alone)."""
    weights = torchvision_resnet_to_trunk(reference.state_dict())
    assert all(k.startswith(TRUNK_PREFIX) for k in weights), sorted(weights)[:3]
    return {k.removeprefix(TRUNK_PREFIX): v for k, v in weights.items()}


def reference_stages(reference: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    x = reference.maxpool(reference.relu(reference.bn1(reference.conv1(images))))
    outputs = []
    for layer in (reference.layer1, reference.layer2, reference.layer3, reference.layer4):
        x = layer(x)
        outputs.append(x)
    return outputs


@pytest.mark.parametrize(
    "factory, config",
    [
        (resnet50, BackboneConfig(depth=50)),
        (resnext50_32x4d, BackboneConfig(depth=50, groups=32, width_per_group=4)),
        (resnet101, BackboneConfig(depth=101)),
    ],
    ids=["R-50", "X-50-32x4d", "R-101"],
)
def test_trunk_matches_torchvision(factory, config):
    torch.manual_seed(0)
    reference = factory().eval()
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    trunk = ResNet(config).eval()
    trunk.load_state_dict(trunk_weights_from(reference))
    images = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        expected = reference_stages(reference, images)
        outputs = trunk(images)
    assert list(outputs) == ["res2", "res3", "res4", "res5"]
    features = list(outputs.values())
    assert [f.shape[1] for f in features] == [256, 512, 1024, 2048]
    assert [f.shape[-1] for f in features] == [24, 12, 6, 3]
    # output_shape() describes what forward returns: channels, and stride = 96 / width
    assert trunk.output_shape() == {
        name: ShapeSpec(f.shape[1], 96 // f.shape[-1]) for name, f in outputs.items()
    }
    for ours, theirs in zip(features, expected):
        # Activations grow through 33 blocks of random weights; compare at their own scale.
        scale = theirs.abs().max()
        torch.testing.assert_close(ours / scale, theirs / scale, rtol=0, atol=1e-5)


def test_resnext_101_32x8d_widths():
    trunk = ResNet(BackboneConfig(depth=101, groups=32, width_per_group=8))
    assert trunk.res2[0].conv2.groups == 32
    assert trunk.res2[0].conv1.out_channels == 256
    assert trunk.res5[0].conv1.out_channels == 2048
    assert len(trunk.res4) == 23


def test_stride_in_1x1_moves_the_stride():
    plain = ResNet(BackboneConfig(stride_in_1x1=False))
    msra = ResNet(BackboneConfig(stride_in_1x1=True))
    assert plain.res3[0].conv1.stride == (1, 1) and plain.res3[0].conv2.stride == (2, 2)
    assert msra.res3[0].conv1.stride == (2, 2) and msra.res3[0].conv2.stride == (1, 1)


@pytest.mark.parametrize(
    "freeze_at, frozen",
    [(0, []), (1, ["stem"]), (2, ["stem", "res2"]), (5, ["stem", "res2", "res3", "res4", "res5"])],
)
def test_freeze_at(freeze_at, frozen):
    trunk = ResNet(BackboneConfig(freeze_at=freeze_at))
    for name in ["stem", "res2", "res3", "res4", "res5"]:
        trainable = [p.requires_grad for p in getattr(trunk, name).parameters()]
        assert not any(trainable) if name in frozen else all(trainable), name


def test_frozen_stages_keep_their_batchnorm_statistics_in_training():
    small = BackboneConfig(
        stage_blocks=(1, 1, 1, 1), stage_channels=(32, 64, 64, 64), stem_channels=16, width_per_group=8
    )
    trunk = ResNet(BackboneConfig(**{**small.__dict__, "norm": "bn", "freeze_at": 2})).train()
    before = {k: v.clone() for k, v in trunk.state_dict().items() if "running" in k}
    trunk(torch.randn(2, 3, 64, 64) * 3 + 1)
    after = trunk.state_dict()
    for key, value in before.items():
        frozen = key.startswith(("stem.", "res2."))
        assert torch.equal(after[key], value) == frozen, key
    assert not trunk.stem.training and not trunk.res2.training and trunk.res3.training
    trunk.eval().train()  # and again after a round trip through eval mode
    assert not trunk.res2[0].norm1.training and trunk.res3[0].norm1.training


@pytest.mark.parametrize(
    "norm, kind", [("frozen_bn", FrozenBatchNorm2d), ("bn", torch.nn.BatchNorm2d), ("gn", torch.nn.GroupNorm)]
)
def test_norm_choice(norm, kind):
    trunk = ResNet(BackboneConfig(norm=norm, norm_eps=1e-3))
    assert isinstance(trunk.res4[2].norm2, kind)
    assert trunk.res4[2].norm2.eps == 1e-3


def test_frozen_batchnorm_equals_eval_batchnorm():
    torch.manual_seed(0)
    reference = torch.nn.BatchNorm2d(8, eps=1e-5).eval()
    with torch.no_grad():
        reference.running_mean.uniform_(-1, 1)
        reference.running_var.uniform_(0.5, 2)
        reference.weight.uniform_(0.5, 2)
        reference.bias.uniform_(-1, 1)
    frozen = FrozenBatchNorm2d(8, eps=1e-5)
    frozen.load_state_dict(reference.state_dict())  # num_batches_tracked is accepted and dropped
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(frozen(x), reference(x))


def test_unknown_depth_and_norm_are_rejected():
    with pytest.raises(ValueError, match="depth"):
        ResNet(BackboneConfig(depth=34))
    with pytest.raises(ValueError, match="norm"):
        ResNet(BackboneConfig(norm="layer"))
