"""model_best.pt and patience: the best evaluation's model is kept, and a run that stops
improving stops; the validation loss beside AP; results.csv and the two-panel curves."""

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from maskrcnn.cli.main import main
from maskrcnn.data.shapes import make_shapes
from maskrcnn.engine.hooks import evaluation as evaluation_hook
from maskrcnn.engine.metrics import read_metrics
from maskrcnn.engine.trainer import train
from maskrcnn.testing import shapes_training_config as tiny_config


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    make_shapes(root, 6, 3, seed=0)
    return root


def stub_evaluations(monkeypatch, figures: list[dict]) -> list[int]:
    """Replace the evaluation's scoring by `figures`, one record's values per evaluation, in
    turn; returns the list the iterations of the evaluations are appended to."""
    seen = []

    def score(self, trainer):
        values = figures[len(seen)]
        seen.append(trainer.iteration)
        per_kind = {"AP": values.get("segm_AP", 0.0)}
        metrics = {"bbox": dict(per_kind), "segm": dict(per_kind), "per_class": {}}
        return {"iteration": trainer.iteration, **values}, metrics, {}, []

    monkeypatch.setattr(evaluation_hook.PeriodicEvaluation, "_score", score)
    return seen


def test_patience_stops_the_run_and_keeps_the_best_model(shapes, tmp_path, monkeypatch):
    # mask AP rises to its best at the 2nd evaluation, then two evaluations bring nothing better
    aps = [0.10, 0.30, 0.30, 0.20, 0.99]
    seen = stub_evaluations(monkeypatch, [{"segm_AP": ap, "bbox_AP": ap} for ap in aps])
    run = tmp_path / "run"
    config = tiny_config(shapes, run, "solver.max_iter=20", "solver.eval_period=2", "solver.patience=2")
    model = train(config)
    assert seen == [2, 4, 6, 8]  # stopped at 8: the final evaluation is the 8th iteration's again
    final = torch.load(run / "model_final.pt", weights_only=True)
    best = torch.load(run / "model_best.pt", weights_only=True)
    assert final["iteration"] == 8 and best["iteration"] == 4
    assert best["best_metric"] == {"name": "segm_AP", "value": 0.30}
    # the best file holds the weights of iteration 4, not the final ones
    assert any(not torch.equal(best["model"][k], v) for k, v in model.state_dict().items())
    summary = json.loads((run / "metrics.json").read_text())["best"]
    assert summary == {"metric": "segm_AP", "value": 0.30, "iteration": 4, "file": "model_best.pt"}
    evaluations = [r["iteration"] for r in read_metrics(run / "metrics.jsonl") if "segm_AP" in r]
    assert evaluations == [2, 4, 6, 8]  # the final evaluation is not logged twice


def test_the_validation_loss_can_choose_the_best_model(shapes, tmp_path, monkeypatch):
    losses = [2.0, 1.5, 1.7, 1.4]
    stub_evaluations(monkeypatch, [{"val_loss": v, "segm_AP": 0.5} for v in losses])
    run = tmp_path / "run"
    overrides = ("solver.max_iter=8", "solver.eval_period=2", "solver.best_metric=val_loss")
    train(tiny_config(shapes, run, *overrides))
    best = torch.load(run / "model_best.pt", weights_only=True)
    assert best["iteration"] == 8 and best["best_metric"]["value"] == 1.4  # lower is better


def test_patience_counts_on_across_a_resume(shapes, tmp_path, monkeypatch):
    aps = [0.5, 0.4, 0.3, 0.2, 0.1]
    seen = stub_evaluations(monkeypatch, [{"segm_AP": ap} for ap in aps])
    run = tmp_path / "run"
    overrides = ("solver.eval_period=2", "solver.patience=3", "solver.checkpoint_period=4")
    train(tiny_config(shapes, run, "solver.max_iter=4", *overrides))  # evaluations at 2 and 4 (final)
    train(tiny_config(shapes, run, "solver.max_iter=20", *overrides), resume=True)
    # 4 was the last run's final evaluation: 2 best, 4 and 6 and 8 worse -> stop at 8
    assert seen == [2, 4, 6, 8]
    assert torch.load(run / "model_final.pt", weights_only=True)["iteration"] == 8
    assert torch.load(run / "model_best.pt", weights_only=True)["iteration"] == 2


def test_eval_of_model_best_reproduces_its_ap(shapes, tmp_path):
    run = tmp_path / "run"
    overrides = ("solver.max_iter=6", "solver.eval_period=2", "model.roi_heads.score_threshold=0")
    train(tiny_config(shapes, run, *overrides))
    best = json.loads((run / "metrics.json").read_text())["best"]
    argv = [
        "eval",
        "shapes",
        "--weights",
        str(run / "model_best.pt"),
        "--out",
        str(tmp_path / "eval"),
        "--device",
        "cpu",
    ]
    argv += ["--json", str(shapes / "annotations" / "instances_val.json"), "--images", str(shapes / "val")]
    assert main(argv) == 0
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert again["segm"]["AP"] == pytest.approx(best["value"], abs=1e-9)
    logged = {r["iteration"]: r["segm_AP"] for r in read_metrics(run / "metrics.jsonl") if "segm_AP" in r}
    assert best["value"] == max(logged.values()) and logged[best["iteration"]] == best["value"]


def test_evaluations_log_the_validation_loss_into_metrics_csv_and_curves(shapes, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(shapes, run, "solver.max_iter=4", "solver.eval_period=2", "solver.log_period=1"))
    records = read_metrics(run / "metrics.jsonl")
    evaluations = [r for r in records if "val_loss" in r]
    assert [r["iteration"] for r in evaluations] == [2, 4]
    steps = [r for r in records if "loss" in r]
    terms = {k[len("val_") :] for k in evaluations[0] if k.startswith("val_loss_")}
    assert terms == {k for k in steps[0] if k.startswith("loss_")}  # the training loss's terms
    for record in evaluations:
        parts = sum(v for k, v in record.items() if k.startswith("val_loss_"))
        assert math.isfinite(record["val_loss"]) and record["val_loss"] == pytest.approx(parts)
    with open(run / "results.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == len(records)  # one row per record: 4 log periods and 2 evaluations
    for row, record in zip(rows, records):
        assert int(row["iteration"]) == record["iteration"]
        for key in ("loss", "val_loss", "segm_AP"):
            if record.get(key) is None:
                assert row[key] == ""
            else:
                assert float(row[key]) == pytest.approx(record[key], rel=1e-12)
    with Image.open(run / "loss_curves.png") as picture:
        assert picture.size == (800, 900)  # two panels of 8 x 4.5 inches at 100 dpi


def test_the_validation_loss_leaves_the_training_untouched(shapes, tmp_path):
    from maskrcnn.engine import distributed
    from maskrcnn.engine.training_data import validation_data
    from maskrcnn.engine.validation_loss import validation_loss
    from maskrcnn.modeling.build import build_model

    config = tiny_config(shapes, tmp_path / "run", "model.backbone.norm=bn", "model.backbone.freeze_at=0")
    torch.manual_seed(0)
    model = build_model(config.model).train()
    dataset = validation_data(config)
    context = distributed.Context(0, 1, torch.device("cpu"))
    statistics = {k: v.clone() for k, v in model.state_dict().items()}
    generator = torch.get_rng_state()
    first = validation_loss(model, dataset, config, context)
    second = validation_loss(model, dataset, config, context)
    assert first == second  # the same sampling draws each time
    assert torch.equal(torch.get_rng_state(), generator)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in statistics.items())  # BN stats too
    assert model.training and all(m.training for m in model.modules())
    assert set(first) == {"val_loss"} | {
        f"val_{k}" for k in ("loss_box", "loss_cls", "loss_mask", "loss_rpn_box", "loss_rpn_objectness")
    }


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("model.masks=false", "solver.best_metric=segm_AP"), "solver.best_metric='segm_AP'"),
        (("solver.patience=3", "solver.eval_period=0"), "evaluates only at its end"),
        (("solver.patience=3",), "evaluates only at its end"),  # auto without a budget: the end only
        (("solver.eval_period=often",), '"auto" or an integer >= 0'),
        (("solver.best_metric=mask_ap",), "solver.best_metric='mask_ap'"),
    ],
)
def test_settings_that_cannot_work_are_refused_before_training(shapes, tmp_path, overrides, message):
    from maskrcnn.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        train(tiny_config(shapes, tmp_path / "run", *overrides))
    assert message in str(caught.value)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_patience_without_a_validation_split_is_refused(shapes, tmp_path):
    argv = ["train", "shapes", "--train-json", str(shapes / "annotations" / "instances_train.json")]
    argv += ["--train-images", str(shapes / "train"), "--out", str(tmp_path / "run"), "--patience", "2"]
    argv += ["--eval-period", "2"]
    assert main(argv) == 2
