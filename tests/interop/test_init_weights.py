"""Initial weights for training: an ImageNet trunk, or a whole model with other classes."""

import pytest
import torch
from torchvision.models import resnet50

from maskrcnn import ModelConfig, build_model
from maskrcnn.engine.checkpoint import save_checkpoint
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
    assert torch.equal(state["trunk.res4.5.conv2.weight"], classifier.layer3[5].conv2.weight)
    assert torch.equal(state["trunk.stem.norm.running_var"], classifier.bn1.running_var)
    assert not any(key.startswith("trunk.") for key in untouched)
    assert "fpn.lateral.0.weight" in untouched and "roi_heads.box_predictor.cls_score.weight" in untouched


def test_fine_tuning_to_other_classes_keeps_fresh_predictors(tmp_path):
    torch.manual_seed(0)
    source = build_model(ModelConfig(num_classes=5))
    path = tmp_path / "source.pt"
    save_checkpoint(path, source)
    target = build_model(ModelConfig(num_classes=3))
    fresh = target.roi_heads.box_predictor.cls_score.weight.clone()
    with pytest.warns(UserWarning, match="cls_score.weight"):
        untouched = load_initial_weights(target, str(path))
    assert torch.equal(target.roi_heads.box_predictor.cls_score.weight, fresh)
    assert torch.equal(target.fpn.output[2].weight, source.fpn.output[2].weight)
    assert "roi_heads.mask_head.predictor.weight" in untouched


def test_unrelated_files_are_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"something": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="other.pt"):
        load_initial_weights(build_model(ModelConfig(num_classes=3)), str(path))
