"""Training with the small-data options: augmentation presets and switches, repeat-factor
sampling and anchors fitted to the data, resumed exactly; poorly fitting anchors warned about."""

from pathlib import Path

import pytest
import torch

from maskrcnn.data.shapes import make_shapes
from maskrcnn.engine.metrics import read_metrics
from maskrcnn.engine.trainer import train
from maskrcnn.engine.training_setup import AnchorWarning
from maskrcnn.testing import shapes_training_config as tiny_config

SMALL_DATA = (
    "data.augment=lsj+copy_paste",
    "data.lsj_size=160",
    "data.vertical_flip=0.5",
    "data.rotate90=true",
    "data.photometric=0.3",
    "data.repeat_factor_threshold=0.5",
    "model.anchors.sizes=auto",
    "solver.eval_period=0",
)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    make_shapes(root, 8, 2, seed=0)
    return root


def losses(output: Path) -> list[tuple[int, float]]:
    return [(r["iteration"], r["loss"]) for r in read_metrics(output / "metrics.jsonl") if "loss" in r]


def test_the_small_data_options_train_say_what_they_do_and_resume_exactly(shapes, tmp_path, capsys):
    straight = tmp_path / "straight"
    train(tiny_config(shapes, straight, "solver.max_iter=6", *SMALL_DATA))
    out = capsys.readouterr().out
    assert "augment lsj+copy_paste: scale 0.1-2 of a 160 px square" in out
    assert "vertical flip 0.5, quarter turns, photometric 0.3" in out
    assert "model.anchors.sizes auto: " in out and "repeat-factor sampling (threshold 0.5)" in out
    checkpoint = torch.load(straight / "model_final.pt", weights_only=False)
    fitted = checkpoint["config"]["anchors"]["sizes"]
    assert len(fitted) == 5 and all(isinstance(size, int) for size in fitted)

    split = tmp_path / "split"
    train(tiny_config(shapes, split, "solver.max_iter=3", *SMALL_DATA))
    train(tiny_config(shapes, split, "solver.max_iter=6", *SMALL_DATA), resume=True)
    expected, resumed = losses(straight), losses(split)
    assert [i for i, _ in resumed] == list(range(1, 7))
    assert [loss for _, loss in resumed] == pytest.approx([loss for _, loss in expected], abs=1e-6, rel=0)


def test_anchors_that_cover_the_boxes_poorly_are_warned_about(shapes, tmp_path):
    config = tiny_config(
        shapes, tmp_path / "run", "solver.max_iter=1", "model.anchors.sizes=[256,512,1024,2048,4096]"
    )
    with pytest.warns(AnchorWarning, match=r"model.anchors.sizes 256, 512, 1024, 2048, 4096 give \d"):
        train(config)
