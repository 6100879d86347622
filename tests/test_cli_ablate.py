"""`maskrcnn ablate`: the paper's Table 2 as config overrides, the report's rules on given numbers,
the runner's skip/continue/failure logic with a stand-in trainer, and one real run on tiny data."""

import csv
import io
import json
import signal
import statistics
from pathlib import Path

import pytest
import torch
import yaml

from maskrcnn.checkpoint import model_config_of
from maskrcnn.cli.main import main
from maskrcnn.config import load_config
from maskrcnn.config.validate import WITHOUT_EFFECT
from maskrcnn.data.shapes import make_shapes
from maskrcnn.engine.stop import Interrupted
from maskrcnn.experiments.report import Stat, build_reports, csv_table, direction, markdown_table, shown
from maskrcnn.experiments.tables import TABLES, PaperFigures, Row, Table, row_overrides

SHAPES = str(Path(__file__).resolve().parents[1] / "configs" / "shapes.yaml")
ALL_ROWS = [(key, row) for key, table in TABLES.items() for row in table.rows]


def value_at(config, dotted: str):
    node = config
    for part in dotted.split("."):
        node = getattr(node, part)
    return list(node) if isinstance(node, tuple) else node


@pytest.mark.parametrize("key, row", ALL_ROWS, ids=[f"{k}-{r.name}" for k, r in ALL_ROWS])
def test_every_row_loads_as_a_config_that_holds_its_overrides(key, row):
    config = load_config(SHAPES, row_overrides(row, ["solver.max_iter=7"]))
    assert config.solver.max_iter == 7  # the command's own overrides are kept
    for item in row.overrides:
        dotted, _, text = item.partition("=")
        assert value_at(config, dotted) == yaml.safe_load(text), item


@pytest.mark.parametrize("key", sorted(TABLES))
def test_each_table_varies_what_it_studies_from_one_baseline(key):
    table = TABLES[key]
    names = [row.name for row in table.rows]
    assert len(set(names)) == len(names) and table.baseline in names
    assert all(row.paper is not None for row in table.rows)  # every row has the paper's figure
    baseline = dict(item.split("=", 1) for item in table.row(table.baseline).overrides)
    for row in table.rows:
        overrides = dict(item.split("=", 1) for item in row.overrides)
        changed = {k for k in overrides.keys() | baseline.keys() if overrides.get(k) != baseline.get(k)}
        if row.name == table.baseline:
            assert not changed
        elif key == "2a":  # backbones: the trunk and where the heads read it
            assert changed and all(k.startswith("model.") for k in changed), changed
        else:  # one design choice at a time, the trunk fixed (and what only that design reads)
            unread = {
                f"model.{setting}"
                for _, _, settings in WITHOUT_EFFECT
                for setting in settings
                if f"model.{setting}" in overrides or f"model.{setting}" in baseline
            }
            assert len(changed - unread) == 1, (row.name, changed)


def S(mean, spread=None, n=1):
    return Stat(mean, spread, n)


@pytest.mark.parametrize(
    "row, baseline, paper_row, paper_baseline, expected",
    [
        (S(20.0), S(25.0), 26.9, 30.3, "agrees (lower)"),
        (S(27.0), S(25.0), 32.7, 30.3, "agrees (higher)"),
        (S(27.0), S(25.0), 26.9, 30.3, "disagrees (ours higher, paper lower)"),
        (S(20.0), S(25.0), 33.6, 30.3, "disagrees (ours lower, paper higher)"),
        (S(25.0), S(25.0), 26.9, 30.3, "no difference (paper lower)"),
        # as the table shows them: 0.0 against 0.0 is no difference, whatever the third decimal
        (S(0.012), S(0.031), 33.6, 30.3, "no difference (paper higher)"),
        (S(0.04), S(0.12), 33.6, 30.3, "disagrees (ours lower, paper higher)"),  # 0.0 against 0.1
        # noise: the difference against the larger of the two spreads
        (S(24.0, 0.5, 3), S(25.0, 1.2, 3), 26.9, 30.3, "within noise"),
        (S(24.0, 1.0, 3), S(25.0, 0.2, 3), 26.9, 30.3, "within noise"),
        (S(23.0, 1.0, 3), S(25.0, 0.9, 3), 26.9, 30.3, "agrees (lower)"),
        (S(27.0, 1.0, 3), S(25.0, 0.9, 3), 26.9, 30.3, "disagrees (ours higher, paper lower)"),
        (S(20.0), None, 26.9, 30.3, "n/a (baseline not run)"),
        (S(20.0), S(25.0), None, 30.3, "n/a (no paper figure)"),
    ],
)
def test_direction_against_the_baseline(row, baseline, paper_row, paper_baseline, expected):
    assert direction(row, baseline, paper_row, paper_baseline) == expected


def test_a_value_is_shown_with_its_spread_when_there_are_seeds():
    assert shown(S(31.24, 0.81, 3)) == "31.2 ± 0.8"
    assert shown(S(31.26)) == "31.3"
    assert shown(None) == "–"


TOY = Table(
    "2x",
    "toy",
    "b",
    (
        Row("a", ("model.roi_heads.pooler=pool",), PaperFigures(26.9, 46.5, 21.6, 28.2)),
        Row("b", ("model.roi_heads.pooler=align",), PaperFigures(30.9, 51.8, 32.1, 34.0)),
        Row("c", ("model.roi_heads.pooler=warp",), PaperFigures(27.1)),
    ),
)


def run(mask_ap, box_ap=40.0, seconds=120.0, iterations=100):
    return {
        "mask_ap": mask_ap,
        "mask_ap50": mask_ap + 20,
        "mask_ap75": mask_ap - 5,
        "box_ap": box_ap,
        "seconds": seconds,
        "iterations": iterations,
    }


def test_the_report_of_given_runs_in_markdown_and_csv():
    runs = {"a": [run(20.0), run(21.0), run(23.0)], "b": [run(30.0), run(31.0), run(30.5)]}
    reports = build_reports(TOY, TOY.rows, runs, 3, {"c": "TypeError: not wired"})
    text = markdown_table(TOY, reports, ["a header line", "another"])
    assert text.startswith("# Table 2x: toy") and "\na header line\n" in text and "\nanother\n" in text
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    a_mask = [20.0, 21.0, 23.0]
    assert f"{statistics.fmean(a_mask):.1f} ± {statistics.stdev(a_mask):.1f}" in rows["a"]
    assert "agrees (lower)" in rows["a"] and "| done |" in rows["a"]
    assert "| baseline |" in rows["b"]
    assert "failed: TypeError: not wired" in rows["c"] and "| – |" in rows["c"]
    header = rows["row"].split(" | ")
    assert "paper box AP" in header[-3] and "paper AP50" in rows["row"]  # the paper gives them for a row
    table = list(csv.DictReader(io.StringIO(csv_table(TOY, reports))))
    assert [line["row"] for line in table] == ["a", "b", "c"]
    assert float(table[0]["mask_ap"]) == pytest.approx(statistics.fmean(a_mask), abs=0.005)
    assert float(table[0]["mask_ap_sd"]) == pytest.approx(statistics.stdev(a_mask), abs=0.005)
    assert table[0]["paper_box_ap"] == "28.2" and table[2]["paper_box_ap"] == ""
    assert table[1]["vs_baseline"] == "baseline" and table[1]["baseline"] == "True"
    assert table[2]["mask_ap"] == "" and table[2]["status"].startswith("failed")


def test_a_row_with_fewer_seeds_done_says_so():
    reports = build_reports(TOY, TOY.rows[:2], {"a": [run(20.0)], "b": [run(30.0), run(31.0)]}, 2, {})
    assert [r.status for r in reports] == ["1 of 2 seeds", "done"]


# The runner, with a stand-in for the trainer: what it runs, skips, continues and records.


class FakeTrainer:
    """Writes what a finished run leaves (metrics.json, model_final.pt, last.pt, metrics.jsonl),
    with a mask AP that depends on the pooler and the seed; can fail or be stopped on a row."""

    def __init__(self, fail: str = "", stop: str = ""):
        self.calls: list[tuple[str, int, bool, bool]] = []
        self.schedules: list[tuple[int, int, tuple[int, ...]]] = []
        self.fail, self.stop = fail, stop

    def __call__(self, config, resume=False, overwrite=False):
        pooler, out = config.model.roi_heads.pooler, Path(config.output_dir)
        self.calls.append((pooler, config.seed, resume, overwrite))
        self.schedules.append((config.solver.max_iter, config.solver.warmup_iters, config.solver.steps))
        out.mkdir(parents=True, exist_ok=True)
        (out / "last.pt").write_bytes(b"checkpoint")
        if pooler == self.fail:
            raise RuntimeError(f"cannot build the {pooler} pooler")
        if pooler == self.stop:
            raise Interrupted(signal.SIGTERM, "stopped")
        ap = {"pool": 0.20, "align": 0.30, "warp": 0.25}[pooler] + 0.01 * config.seed
        metrics = {iou: {"AP": ap, "AP50": ap + 0.2, "AP75": ap - 0.1} for iou in ("bbox", "segm")}
        (out / "metrics.json").write_text(json.dumps(metrics))
        (out / "metrics.jsonl").write_text(json.dumps({"iteration": config.solver.max_iter}) + "\n")
        (out / "model_final.pt").write_bytes(b"model")


@pytest.fixture
def ablate(tmp_path, monkeypatch):
    """Runs `maskrcnn ablate 2c` in tmp_path with a FakeTrainer; returns (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)
    make_shapes(tmp_path / "shapes", 1, 1)

    def call(trainer, *args, capsys):
        monkeypatch.setattr("maskrcnn.engine.trainer.train", trainer)
        code = main(["ablate", "2c", "--data", "shapes", "--out", "out", "--device", "cpu", *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return call


def test_the_runner_records_each_row_skips_it_on_a_rerun_and_refuses_other_settings(ablate, tmp_path, capsys):
    trainer = FakeTrainer()
    code, out, _ = ablate(trainer, "--rows", "pool,align", "--max-iter", "5", "--seeds", "2", capsys=capsys)
    assert code == 0
    assert [c[:2] for c in trainer.calls] == [("pool", 0), ("pool", 1), ("align", 0), ("align", 1)]
    assert "row 1/2 pool (seed 0): training for 5 iterations" in out
    assert "row 2/2 align (seed 1): mask AP 31.0 (AP50 51.0, AP75 21.0)" in out
    lines = {line.split(" | ")[0].strip("| "): line for line in out.splitlines() if line.startswith("| ")}
    pool = [20.0, 21.0]
    assert f"| {statistics.fmean(pool):.1f} ± {statistics.stdev(pool):.1f} |" in lines["pool"]
    assert "agrees (lower)" in lines["pool"] and "| baseline |" in lines["align"]
    text = (tmp_path / "out" / "table.md").read_text()
    assert "5 iterations per run; seeds 0, 1." in text and "torch " in text and " cores)" in text
    assert lines["pool"] in text

    again = FakeTrainer()
    code, out, _ = ablate(again, "--rows", "pool,align", "--max-iter", "5", "--seeds", "2", capsys=capsys)
    assert code == 0 and again.calls == []
    assert out.count("done earlier, skipped") == 4

    code, _, err = ablate(again, "--rows", "pool,align", "--max-iter", "6", "--seeds", "2", capsys=capsys)
    assert code == 2 and again.calls == []
    assert (
        err.startswith("error: --out out: holds an ablation run with --max-iter 5, not 6")
        and "--overwrite" in err
    )
    assert len(err.splitlines()) == 1
    code, _, err = ablate(again, "--rows", "pool", "--max-iter", "5", "--seeds", "3", capsys=capsys)
    assert code == 2 and "--seeds 2, not 3" in err

    code, _, _ = ablate(again, "--rows", "pool", "--max-iter", "6", "--overwrite", capsys=capsys)
    assert code == 0 and again.calls == [("pool", 0, False, True)]  # started again, not continued


def test_a_failing_row_is_reported_and_the_others_run(ablate, tmp_path, capsys):
    code, out, err = ablate(
        FakeTrainer(fail="warp"), "--rows", "pool,warp,align", "--max-iter", "2", capsys=capsys
    )
    assert code == 1
    assert "row 2/3 warp (seed 0): failed: RuntimeError: cannot build the warp pooler" in err
    assert "row 3/3 align (seed 0): mask AP 30.0" in out
    table = {r["row"]: r for r in csv.DictReader(io.StringIO((tmp_path / "out" / "table.csv").read_text()))}
    assert table["warp"]["status"] == "failed: RuntimeError: cannot build the warp pooler"
    assert table["pool"]["status"] == table["align"]["status"] == "done"

    trainer = FakeTrainer()  # fixed: only the failed row runs, continuing its folder's checkpoint
    code, out, _ = ablate(trainer, "--rows", "pool,warp,align", "--max-iter", "2", capsys=capsys)
    assert code == 0 and trainer.calls == [("warp", 0, True, False)]
    assert "row 2/3 warp (seed 0): continuing for 2 iterations" in out


def test_a_stopped_ablation_keeps_its_rows_and_continues(ablate, tmp_path, capsys):
    code, _, err = ablate(FakeTrainer(stop="align"), "--rows", "pool,align", "--max-iter", "2", capsys=capsys)
    assert code == 128 + signal.SIGTERM
    assert err.strip() == (
        "stopped by SIGTERM in row 2/2 align (seed 0): the table holds the runs done so far; "
        "run the same command again to continue"
    )
    table = {r["row"]: r for r in csv.DictReader(io.StringIO((tmp_path / "out" / "table.csv").read_text()))}
    assert table["pool"]["status"] == "done" and table["align"]["status"] == "not run"

    trainer = FakeTrainer()
    code, _, _ = ablate(trainer, "--rows", "pool,align", "--max-iter", "2", capsys=capsys)
    assert code == 0 and trainer.calls == [("align", 0, True, False)]  # resumed from its last.pt


def test_a_finished_run_the_table_missed_is_recorded_without_training(ablate, tmp_path, capsys):
    assert ablate(FakeTrainer(), "--rows", "pool,align", "--max-iter", "2", capsys=capsys)[0] == 0
    state = json.loads((tmp_path / "out" / "ablation.json").read_text())
    del state["runs"]["align/seed0"]  # as if stopped between the run's end and the table's update
    (tmp_path / "out" / "ablation.json").write_text(json.dumps(state))
    trainer = FakeTrainer()
    code, out, _ = ablate(trainer, "--rows", "pool,align", "--max-iter", "2", capsys=capsys)
    assert code == 0 and trainer.calls == []
    assert "row 2/2 align (seed 0): finished earlier, recorded (mask AP 30.0" in out


# One real run: two rows of Table 2c, one iteration each, on a tiny dataset and a narrow model.

TINY = [
    "data.num_workers=0",
    "data.images_per_batch=2",
    "data.min_sizes_train=[64]",
    "data.max_size_train=96",
    "model.input.min_size=64",
    "model.input.max_size=96",
    "model.backbone.stage_channels=[32,64,128,256]",
    "model.backbone.stem_channels=16",
    "model.backbone.width_per_group=8",
    "model.roi_heads.fc_dim=64",
    "model.roi_heads.mask_conv_dim=16",
    "model.roi_heads.batch_size_per_image=16",
    "model.rpn.pre_nms_topk_train=100",
    "model.rpn.post_nms_topk_train=50",
    "model.rpn.pre_nms_topk_test=100",
    "model.rpn.post_nms_topk_test=50",
    "model.roi_heads.detections_per_image=20",
    "solver.warmup_iters=1",
    "solver.log_period=1",
]


def test_ablate_trains_evaluates_and_tabulates_two_rows_then_skips_them(tmp_path, capsys):
    make_shapes(tmp_path / "shapes", 2, 2, seed=1, image_size=(64, 96))
    out = tmp_path / "out"
    argv = ["ablate", "2c", "--rows", "pool,align", "--max-iter", "1", "--device", "cpu"]
    argv += ["--data", str(tmp_path / "shapes"), "--out", str(out), *TINY]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "row 1/2 pool (seed 0): training for 1 iteration in" in printed
    state = json.loads((out / "ablation.json").read_text())
    for name in ("pool", "align"):
        run_dir = out / name / "seed0"
        metrics = json.loads((run_dir / "metrics.json").read_text())  # the trainer's own evaluation
        recorded = state["runs"][f"{name}/seed0"]
        assert recorded["mask_ap"] == pytest.approx(100 * metrics["segm"]["AP"])
        assert recorded["box_ap"] == pytest.approx(100 * metrics["bbox"]["AP"])
        assert recorded["iterations"] == 1
        payload = torch.load(run_dir / "model_final.pt", map_location="cpu", weights_only=True)
        assert model_config_of(payload, name).roi_heads.pooler == name  # the row's design was trained
    table = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
    assert [(r["row"], r["status"]) for r in table] == [("pool", "done"), ("align", "done")]
    assert float(table[0]["mask_ap"]) == pytest.approx(state["runs"]["pool/seed0"]["mask_ap"], abs=0.005)
    assert table[0]["paper_mask_ap"] == f"{TABLES['2c'].row('pool').paper.mask_ap:.1f}"
    text = (out / "table.md").read_text()
    assert text.startswith("# Table 2c: ") and "1 iteration per run; seed 0." in text
    assert "| align |" in text and "| baseline |" in text

    finals = {
        name: (out / name / "seed0" / "model_final.pt").stat().st_mtime_ns for name in ("pool", "align")
    }
    assert main(argv) == 0
    assert capsys.readouterr().out.count("done earlier, skipped") == 2
    assert finals == {n: (out / n / "seed0" / "model_final.pt").stat().st_mtime_ns for n in finals}


def test_an_iteration_count_scales_the_configs_schedule(ablate, capsys):
    # shapes.yaml: 2000 iterations, warm-up 100, drops at 1550 and 1850; 500 iterations keep
    # the proportions (a bare solver.max_iter=500 would never reach the drops).
    trainer = FakeTrainer()
    code, _, _ = ablate(trainer, "--rows", "pool,align", "--iters", "500", capsys=capsys)
    assert code == 0 and trainer.schedules == [(500, 25, (388, 462))] * 2
