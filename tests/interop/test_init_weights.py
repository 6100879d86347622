"""Initial weights for training: an ImageNet trunk, or a whole model with other classes."""

import warnings

import pytest
import torch
from torchvision.models import resnet18, resnet50

from maskrcnn import ModelConfig, build_model
from maskrcnn.checkpoint import save_checkpoint
from maskrcnn.config import BackboneConfig, InputConfig
from maskrcnn.interop.init_weights import load_initial_weights
from maskrcnn.interop.state_dicts import CheckpointError


def test_imagenet_resnet_fills_the_trunk_only(tmp_path):
    torch.manual_seed(0)
    classifier = resnet50()
    path = tmp_path / "resnet50.pth"
    torch.save(classifier.state_dict(), path)
    model = build_model(ModelConfig(num_classes=3))
    untouched = load_initial_weights(model, str(path))
    state = model.state_dict()
    assert torch.equal(state["backbone.trunk.res4.5.conv2.weight"], classifier.layer3[5].conv2.weight)
    assert torch.equal(state["backbone.trunk.stem.norm.running_var"], classifier.bn1.running_var)
    assert not any(key.startswith("backbone.trunk.") for key in untouched)
    assert "backbone.lateral.0.weight" in untouched and "roi_heads.box_head.cls_score.weight" in untouched


def test_imagenet_res5_goes_to_the_c4_box_head(tmp_path):
    # C4 runs res5 per RoI as its box head: the classifier's layer4 initialises it, and the
    # model holds res5 once (the mask head runs the same module).
    torch.manual_seed(0)
    classifier = resnet50()
    path = tmp_path / "resnet50.pth"
    torch.save(classifier.state_dict(), path)
    model = build_model(ModelConfig(num_classes=3, backbone=BackboneConfig(kind="c4")))
    untouched = load_initial_weights(model, str(path))
    state = model.state_dict()
    assert torch.equal(state["roi_heads.box_head.res5.2.conv3.weight"], classifier.layer4[2].conv3.weight)
    assert torch.equal(
        state["roi_heads.box_head.res5.0.shortcut.norm.running_mean"],
        classifier.layer4[0].downsample[1].running_mean,
    )
    assert not any("res5" in key for key in untouched)
    assert not any(key.startswith("roi_heads.mask_head.") and "res5" in key for key in state)
    head_values = sum(v.numel() for v in model.roi_heads.box_head.res5.state_dict().values())
    layer4 = classifier.layer4.state_dict().items()
    assert head_values == sum(v.numel() for k, v in layer4 if "num_batches_tracked" not in k)


def test_fine_tuning_to_other_classes_keeps_fresh_predictors(tmp_path):
    torch.manual_seed(0)
    source = build_model(ModelConfig(num_classes=5))
    path = tmp_path / "source.pt"
    save_checkpoint(path, source)
    target = build_model(ModelConfig(num_classes=3))
    fresh = target.roi_heads.box_head.cls_score.weight.clone()
    with pytest.warns(UserWarning, match="cls_score.weight"):
        untouched = load_initial_weights(target, str(path))
    assert torch.equal(target.roi_heads.box_head.cls_score.weight, fresh)
    assert torch.equal(target.backbone.output[2].weight, source.backbone.output[2].weight)
    assert "roi_heads.mask_head.predictor.weight" in untouched


def test_unrelated_files_are_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"something": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="other.pt"):
        load_initial_weights(build_model(ModelConfig(num_classes=3)), str(path))


def tiny(channels: int = 3) -> ModelConfig:
    return ModelConfig(
        num_classes=3,
        backbone=BackboneConfig(stage_blocks=(1, 1, 1, 1), stage_channels=(64, 128, 256, 512)),
        input=InputConfig(channels=channels, pixel_mean=(0.5,) * channels, pixel_std=(0.25,) * channels),
    )


@pytest.mark.parametrize("channels", [1, 4])
def test_an_rgb_stem_is_adapted_to_other_channel_counts(tmp_path, channels):
    torch.manual_seed(0)
    source = build_model(tiny(3))
    path = tmp_path / "rgb.pt"
    save_checkpoint(path, source)
    rgb = source.backbone.trunk.stem.conv.weight.detach()  # (64, 3, 7, 7)
    target = build_model(tiny(channels))
    with pytest.warns(UserWarning) as warned:
        untouched = load_initial_weights(target, str(path))
    message = " ".join(str(w.message) for w in warned)
    assert str(path) in message and "3 channels (RGB)" in message and f"takes {channels}" in message
    adapted = target.backbone.trunk.stem.conv.weight.detach()
    assert adapted.shape == (64, channels, 7, 7)
    if channels == 1:
        assert "sum of its RGB filters" in message
        torch.testing.assert_close(adapted[:, 0], rgb[:, 0] + rgb[:, 1] + rgb[:, 2])
    else:
        assert "repeated to 4 channels and scaled by 3/4" in message
        for channel, source_channel in enumerate([0, 1, 2, 0]):
            torch.testing.assert_close(adapted[:, channel], rgb[:, source_channel] * 0.75)
    assert "backbone.trunk.stem.conv.weight" not in untouched
    assert torch.equal(target.backbone.trunk.res3[0].conv1.weight, source.backbone.trunk.res3[0].conv1.weight)


def test_an_rgb_stem_on_an_rgb_model_is_copied_without_a_warning(tmp_path):
    torch.manual_seed(0)
    source = build_model(tiny(3))
    save_checkpoint(tmp_path / "rgb.pt", source)
    target = build_model(tiny(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_initial_weights(target, str(tmp_path / "rgb.pt"))
    assert torch.equal(target.backbone.trunk.stem.conv.weight, source.backbone.trunk.stem.conv.weight)


def test_torchvision_layers_left_fresh_are_named_as_the_file_names_them(tmp_path, torchvision_maskrcnn):
    path = tmp_path / "coco.pth"
    torch.save(torchvision_maskrcnn.state_dict(), path)  # 91 classes
    target = build_model(ModelConfig(num_classes=3))
    with pytest.warns(UserWarning) as warned:
        load_initial_weights(target, str(path))
    (message,) = [str(w.message) for w in warned]
    assert "roi_heads.mask_predictor.mask_fcn_logits.weight" in message
    assert "roi_heads.box_predictor.cls_score.weight" in message
    assert "mask_head.predictor" not in message  # this project's name for the first


def test_imagenet_layers_that_do_not_fit_are_named_as_the_file_names_them(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18().state_dict(), path)  # basic blocks: 3x3 conv1 where R50 has 1x1
    with pytest.warns(UserWarning) as warned:
        load_initial_weights(build_model(ModelConfig(num_classes=3)), str(path))
    (message,) = [str(w.message) for w in warned]
    assert "layer1.0.conv1.weight" in message and "layer4.1.conv1.weight" in message
    assert "trunk." not in message and "backbone.body." not in message


def test_a_trunk_that_fits_nowhere_is_refused_with_the_file_names(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18().state_dict(), path)
    narrow = tiny()  # half resnet18's widths: none of its trunk's shapes fit
    narrow.backbone = BackboneConfig(
        stage_blocks=(1, 1, 1, 1), stage_channels=(32, 64, 128, 256), stem_channels=32, width_per_group=32
    )
    with pytest.raises(CheckpointError) as error:
        load_initial_weights(build_model(narrow), str(path))
    message = str(error.value)
    assert "none of its trunk weights fit" in message
    assert "conv1.weight: file has (64, 3, 7, 7), model expects (32, 3, 7, 7)" in message
    assert "trunk." not in message
