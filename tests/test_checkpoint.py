"""Checkpoints are written atomically and read back with their config."""

import pytest
import torch

from maskrcnn import ModelConfig, build_model
from maskrcnn.checkpoint import atomic_save, save_checkpoint
from maskrcnn.config import InputConfig
from maskrcnn.interop.load import load_model


class ExplodesWhenPickled:
    def __reduce__(self):
        raise RuntimeError("disk full (simulated)")


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "model.pt"
    atomic_save({"iteration": 1}, path)
    with pytest.raises(RuntimeError, match="simulated"):
        atomic_save({"iteration": 2, "bad": ExplodesWhenPickled()}, path)
    assert torch.load(path, weights_only=True) == {"iteration": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"], "no temporary file is left behind"


def test_checkpoint_round_trip_rebuilds_the_same_model(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(
        num_classes=3, class_names=("bg", "a", "b"), input=InputConfig(min_size=64, max_size=96)
    )
    config.roi_heads.pooler = "pool"
    model = build_model(config)
    save_checkpoint(tmp_path / "ckpt.pt", model, iteration=7)
    loaded = load_model(tmp_path / "ckpt.pt", device="cpu")
    assert loaded.config == config
    assert loaded.roi_heads.box_head.pooler.kind == "pool"
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["iteration"] == 7
