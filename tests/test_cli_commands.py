"""Command-line details beyond predict's basics: dataset category ids, make-shapes, train errors."""

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from maskrcnn import ModelConfig, build_model
from maskrcnn.checkpoint import save_checkpoint
from maskrcnn.cli.main import main
from maskrcnn.config import InputConfig, RoIHeadsConfig

SHAPES_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "shapes.yaml"


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


def _tiny_training_args(shapes, out) -> list[str]:
    return [
        "train",
        str(SHAPES_CONFIG),
        "--train-json",
        str(shapes / "annotations" / "instances_train.json"),
        "--train-images",
        str(shapes / "train"),
        "--out",
        str(out),
        "--max-iter",
        "1",
        "data.num_workers=0",
        "data.min_sizes_train=[96]",
        "data.max_size_train=128",
        "device=cpu",
    ]


def test_train_without_val_json_trains_without_validation(tmp_path, capsys, monkeypatch):
    from maskrcnn.data.shapes import make_shapes

    make_shapes(tmp_path / "shapes", 2, 1, seed=0)
    # The config names data/shapes for validation; a user's own data has no such split.
    monkeypatch.chdir(tmp_path)
    assert main(_tiny_training_args(tmp_path / "shapes", tmp_path / "run")) == 0
    assert "training without a validation split" in capsys.readouterr().out
    assert (tmp_path / "run" / "model_final.pt").exists()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records and not any("segm_AP" in r for r in records)


def test_train_with_a_missing_val_json_fails_before_training(tmp_path, capsys):
    from maskrcnn.data.shapes import make_shapes

    make_shapes(tmp_path / "shapes", 2, 1, seed=0)
    missing = tmp_path / "nowhere" / "val.json"
    args = _tiny_training_args(tmp_path / "shapes", tmp_path / "run")
    args += ["--val-json", str(missing), "--val-images", str(tmp_path / "shapes" / "val")]
    assert main(args) == 2
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "run" / "metrics.jsonl").exists() and not (tmp_path / "run" / "last.pt").exists()
