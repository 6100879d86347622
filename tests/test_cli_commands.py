"""Command-line details beyond predict's basics: dataset category ids, make-shapes, train errors."""

import json

import numpy as np
import torch
from PIL import Image

from maskrcnn import ModelConfig, build_model
from maskrcnn.cli import main
from maskrcnn.config import InputConfig, RoIHeadsConfig
from maskrcnn.engine.checkpoint import save_checkpoint


def test_predict_reports_the_dataset_category_ids(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(
        num_classes=3,
        class_names=("__background__", "a", "b"),
        category_ids=(5, 9),
        input=InputConfig(min_size=64, max_size=96),
        roi_heads=RoIHeadsConfig(score_threshold=0.0, detections_per_image=5),
    )
    weights = tmp_path / "model.pt"
    save_checkpoint(weights, build_model(config))
    pixels = np.random.default_rng(0).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "image.png")
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(tmp_path / "image.png"),
            "--weights",
            str(weights),
            "--out",
            str(out),
            "--score-threshold",
            "0",
        ]
    )
    assert code == 0
    results = json.loads((out / "predictions.json").read_text())
    assert results and {r["category_id"] for r in results} <= {5, 9}


def test_make_shapes_then_train_rejects_an_unknown_key(tmp_path, capsys):
    assert main(["make-shapes", str(tmp_path / "shapes"), "--train", "3", "--val", "1", "--seed", "4"]) == 0
    assert (tmp_path / "shapes" / "annotations" / "instances_train.json").exists()
    code = main(["train", "configs/shapes.yaml", "solver.learning_rate=0.1", "--out", str(tmp_path / "run")])
    assert code == 2
    assert "solver.learning_rate" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_without_data_says_so(tmp_path, capsys):
    code = main(["train", "configs/shapes.yaml", "data.train_json=''", "--out", str(tmp_path / "run")])
    assert code == 2
    assert "--train-json" in capsys.readouterr().err


def test_overrides_may_follow_the_options(tmp_path, capsys):
    code = main(["train", "configs/shapes.yaml", "--out", str(tmp_path / "run"), "solver.learning_rate=0.1"])
    assert code == 2
    assert "solver.learning_rate" in capsys.readouterr().err
    assert main(["train", "configs/shapes.yaml", "--out", str(tmp_path), "--no-such-flag"]) == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err
