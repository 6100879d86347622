"""Loading torchvision state dicts: key names old and new, and clear errors."""

import pytest
import torch

import maskrcnn
from maskrcnn.checkpoint import save_checkpoint
from maskrcnn.interop.load import load_model
from maskrcnn.interop.state_dicts import CheckpointError, rename_key
from maskrcnn.interop.torchvision import KEY_RULES, is_legacy_layout, torchvision_key_names


def legacy_names(state_dict: dict) -> dict:
    """The key names torchvision used before its FPN/RPN/mask convs were wrapped in blocks."""
    renamed = {}
    for key, value in state_dict.items():
        for index in range(4):
            key = key.replace(f"fpn.inner_blocks.{index}.0.", f"fpn.inner_blocks.{index}.")
            key = key.replace(f"fpn.layer_blocks.{index}.0.", f"fpn.layer_blocks.{index}.")
            key = key.replace(f"roi_heads.mask_head.{index}.0.", f"roi_heads.mask_head.mask_fcn{index + 1}.")
        key = key.replace("rpn.head.conv.0.0.", "rpn.head.conv.")
        renamed[key] = value
    return renamed


@pytest.fixture(scope="module")
def reference_state(torchvision_maskrcnn):
    return torchvision_maskrcnn.state_dict()


def test_every_weight_lands_in_its_place(reference_state):
    model = maskrcnn.from_torchvision(reference_state)
    ours = model.state_dict()
    assert not model.training
    # 307 torchvision keys carry weights; BatchNorm step counters are dropped.
    weights = {k: v for k, v in reference_state.items() if not k.endswith("num_batches_tracked")}
    assert len(ours) == len(weights)
    torch.testing.assert_close(
        ours["backbone.trunk.res3.0.shortcut.conv.weight"],
        weights["backbone.body.layer2.0.downsample.0.weight"],
    )
    torch.testing.assert_close(
        ours["backbone.trunk.res5.2.norm3.running_var"], weights["backbone.body.layer4.2.bn3.running_var"]
    )
    torch.testing.assert_close(ours["backbone.output.3.bias"], weights["backbone.fpn.layer_blocks.3.0.bias"])
    torch.testing.assert_close(ours["rpn.head.objectness.weight"], weights["rpn.head.cls_logits.weight"])
    torch.testing.assert_close(
        ours["roi_heads.mask_head.predictor.weight"],
        weights["roi_heads.mask_predictor.mask_fcn_logits.weight"],
    )
    assert model.config.backbone.norm_eps == 0.0
    assert model.config.num_classes == 91 and model.class_names[1] == "person"


def test_legacy_key_names_load_the_same_weights(reference_state):
    legacy = legacy_names(reference_state)
    assert "rpn.head.conv.weight" in legacy and "roi_heads.mask_head.mask_fcn1.weight" in legacy
    current = maskrcnn.from_torchvision(reference_state).state_dict()
    old = maskrcnn.from_torchvision(legacy).state_dict()
    assert current.keys() == old.keys()
    for key in current:
        assert torch.equal(current[key], old[key]), key


# Keys whose names differ between the layouts: (current, legacy).
FPN_LATERAL = ("backbone.fpn.inner_blocks.1.0.weight", "backbone.fpn.inner_blocks.1.weight")
MASK_CONV = ("roi_heads.mask_head.2.0.bias", "roi_heads.mask_head.mask_fcn3.bias")
RPN_CONV = ("rpn.head.conv.0.0.weight", "rpn.head.conv.weight")


@pytest.mark.parametrize("layout", [0, 1], ids=["current", "legacy"])
def test_problems_are_named_as_the_file_names_its_keys(reference_state, layout, tmp_path):
    broken = legacy_names(reference_state) if layout else dict(reference_state)
    del broken["backbone.body.layer1.0.conv1.weight"]
    del broken[FPN_LATERAL[layout]]
    del broken[MASK_CONV[layout]]
    broken["rpn.head.cls_logits.weight"] = torch.zeros(5, 256, 1, 1)
    broken[RPN_CONV[layout]] = torch.zeros(256, 256, 1, 1)
    broken["some.extra.key"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as error:
        maskrcnn.from_torchvision(broken, source="broken.pth")
    message = str(error.value)
    assert message.startswith("broken.pth: ")
    assert (
        f"missing keys (3): backbone.body.layer1.0.conv1.weight, {FPN_LATERAL[layout]}, {MASK_CONV[layout]}"
        in message
    )
    assert "unexpected keys (1): some.extra.key" in message
    assert "shape mismatches (2): " in message
    assert "rpn.head.cls_logits.weight: file has (5, 256, 1, 1), model expects (3, 256, 1, 1)" in message
    assert f"{RPN_CONV[layout]}: file has (256, 256, 1, 1), model expects (256, 256, 3, 3)" in message
    # Nothing in this project's own names, which the file's owner cannot find in it.
    for ours in ("trunk.", "fpn.lateral", "mask_head.convs", "objectness"):
        assert ours not in message

    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    with pytest.raises(CheckpointError) as from_file:
        load_model(path, device="cpu")
    assert str(from_file.value) == message.replace("broken.pth", str(path), 1)


@pytest.mark.parametrize("layout", [0, 1], ids=["current", "legacy"])
def test_every_key_a_file_lacks_is_named_as_its_layout_would_name_it(reference_state, layout):
    """TORCHVISION_NAMES (and LEGACY_NAMES) invert KEY_RULES for every key of either layout."""
    full = {k: v for k, v in reference_state.items() if not k.endswith(".num_batches_tracked")}
    full = legacy_names(full) if layout else full
    # A file holding one key of its layout: every other key is named by the inverse rules.
    names = torchvision_key_names({RPN_CONV[layout]: full[RPN_CONV[layout]]})
    assert is_legacy_layout(full) == bool(layout)
    for key in full:
        assert names(rename_key(key, KEY_RULES)) == key


def test_number_of_classes_follows_the_weights():
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    small = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3)
    model = maskrcnn.from_torchvision(small.state_dict())
    assert model.config.num_classes == 3
    assert model.roi_heads.mask_head.predictor.out_channels == 3


def test_load_model_tells_file_kinds_apart(tmp_path, reference_state):
    torchvision_file = tmp_path / "tv.pth"
    torch.save(reference_state, torchvision_file)
    wrapped_file = tmp_path / "wrapped.pth"
    torch.save({"model": reference_state}, wrapped_file)
    from_file = load_model(torchvision_file, device="cpu")
    from_wrapped = load_model(wrapped_file, device="cpu")

    ours_file = tmp_path / "ours.pt"
    save_checkpoint(ours_file, from_file)
    from_checkpoint = load_model(ours_file, device="cpu")
    assert from_checkpoint.config == from_file.config
    for key, value in from_file.state_dict().items():
        assert torch.equal(value, from_wrapped.state_dict()[key])
        assert torch.equal(value, from_checkpoint.state_dict()[key])


def test_unreadable_files_are_named(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_model(garbage)
    with pytest.raises(CheckpointError, match="missing.pt: weights file not found"):
        load_model(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="other.pt: not a maskrcnn checkpoint"):
        load_model(other)
