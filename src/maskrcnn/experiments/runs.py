"""The runs of `maskrcnn ablate` (a checked `experiments.plan.Plan`): every row with every seed,
trained and evaluated by the trainer, the table rewritten after each run.

--out holds ablation.json (the settings and each finished run's figures), table.md,
table.csv and one trainer run folder per row and seed (<row>/seed<k>/). All three files are
replaced atomically after every run, so that a stopped or crashed ablation keeps the rows
done so far; the same command run again skips the recorded runs, continues a run that was
stopped from its last.pt (the trainer's resume, budget included) and trains the others.
A row that fails (an error while building or training it) is reported and the next row
runs; the command then exits with 1.
"""

import json
import os
import platform
import sys
import time
from pathlib import Path

from maskrcnn.data.shapes import make_shapes, shapes_dataset_paths
from maskrcnn.engine.stop import Interrupted, signal_name
from maskrcnn.errors import one_line
from maskrcnn.experiments.plan import STATE_FILE, Plan
from maskrcnn.experiments.report import build_reports, csv_table, markdown_table
from maskrcnn.experiments.tables import Row
from maskrcnn.files import strict_json, write_text_atomic

# The dataset written when --data holds none: the demo's (1000 training, 100 validation images).
SHAPES_TRAIN, SHAPES_VAL, SHAPES_SEED = 1000, 100, 0


def run_ablation(plan: Plan) -> int:
    """Train and evaluate every run of `plan` not recorded yet; returns 0, or 1 if a row failed."""
    from maskrcnn.engine.run_folder import FINAL_CHECKPOINT, LAST_CHECKPOINT
    from maskrcnn.engine.trainer import train

    _ensure_dataset(plan.data)
    state = {
        "settings": plan.settings,
        "runs": dict(plan.earlier.get("runs", {})),
        "failures": {},
    }
    header = _header(plan)
    total = len(plan.rows)

    def record() -> None:
        _write_outputs(plan, state, header)

    record()
    for index, row in enumerate(plan.rows, start=1):
        for seed in range(plan.seeds):
            label = f"row {index}/{total} {row.name} (seed {seed})"
            key = run_key(row, seed)
            if key in state["runs"]:
                print(f"{label}: done earlier, skipped ({_figures(state['runs'][key])})", flush=True)
                continue
            run_dir = plan.run_dir(row, seed)
            finished = (run_dir / "metrics.json").exists() and (run_dir / FINAL_CHECKPOINT).exists()
            if finished and not plan.fresh:
                # Finished, but stopped before the table recorded it.
                state["runs"][key] = _run_figures(run_dir, seconds=None)
                print(f"{label}: finished earlier, recorded ({_figures(state['runs'][key])})", flush=True)
                record()
                continue
            resume = (run_dir / LAST_CHECKPOINT).exists() and not plan.fresh
            print(flush=True)  # a blank line before each run's output, to find them in a log
            print(
                f"{label}: {'continuing' if resume else 'training'} {_length(plan)} in {run_dir}", flush=True
            )
            started = time.perf_counter()
            try:
                config = plan.load_run_config(row, seed)
                # A folder with a partial run and no checkpoint to continue from starts again.
                train(config, resume=resume, overwrite=not resume)
                figures = _run_figures(run_dir, time.perf_counter() - started)
            except Interrupted as stop:
                record()
                raise Interrupted(
                    stop.signum,
                    f"stopped by {signal_name(stop.signum)} in {label}: the table holds the runs done so "
                    "far; run the same command again to continue",
                ) from None
            except Exception as error:  # this row's failure: the next rows still run
                if os.environ.get("MASKRCNN_TRACEBACK"):
                    raise
                message = f"{type(error).__name__}: {one_line(error)}"
                print(f"{label}: failed: {message}", file=sys.stderr, flush=True)
                state["failures"][row.name] = message
                record()
                break  # its other seeds would fail alike
            state["runs"][key] = figures
            state["failures"].pop(row.name, None)
            minutes = state["runs"][key]["seconds"] / 60
            print(f"{label}: {_figures(state['runs'][key])}; {minutes:.1f} min", flush=True)
            record()
    print()
    print(_table_only(plan, state, header))
    print(f"wrote {plan.out / 'table.md'}, {plan.out / 'table.csv'} and {plan.out / STATE_FILE}")
    return 1 if state["failures"] else 0


def run_key(row: Row, seed: int) -> str:
    return f"{row.name}/seed{seed}"


def _ensure_dataset(data: Path) -> None:
    paths = shapes_dataset_paths(data)
    if paths["train_annotations"].exists() and paths["val_annotations"].exists():
        print(f"using the shapes dataset in {data}", flush=True)
        return
    print(
        f"writing the shapes dataset to {data} ({SHAPES_TRAIN} training, {SHAPES_VAL} validation images)",
        flush=True,
    )
    make_shapes(data, SHAPES_TRAIN, SHAPES_VAL, seed=SHAPES_SEED)


def _run_figures(run_dir: Path, seconds: float | None) -> dict:
    """A finished run's APs in percent (from its metrics.json), its iterations and seconds."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    iterations = 0
    log = run_dir / "metrics.jsonl"
    if log.exists():
        for line in log.read_text().splitlines():
            if line.strip():
                iterations = max(iterations, int(json.loads(line).get("iteration", 0)))

    def percent(iou_type: str, name: str) -> float | None:
        value = metrics[iou_type].get(name)
        return None if value is None else 100 * value

    return {
        "mask_ap": percent("segm", "AP"),
        "mask_ap50": percent("segm", "AP50"),
        "mask_ap75": percent("segm", "AP75"),
        "box_ap": percent("bbox", "AP"),
        "iterations": iterations,
        "seconds": seconds,
    }


def _figures(run: dict) -> str:
    def number(value) -> str:
        return "n/a" if value is None else f"{value:.1f}"

    mask = (
        f"mask AP {number(run['mask_ap'])} (AP50 {number(run['mask_ap50'])}, AP75 {number(run['mask_ap75'])})"
    )
    return f"{mask}, box AP {number(run['box_ap'])}, {_count(run['iterations'], 'iteration')}"


def _length(plan: Plan) -> str:
    if plan.budget_minutes is not None:
        return f"on a {plan.budget_minutes:g}-minute budget"
    return f"for {_count(plan.max_iter, 'iteration')}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _reports(plan: Plan, state: dict):
    # Every row of the table that has runs here (an earlier --rows), and the rows of this command.
    names = {row.name for row in plan.rows}
    names |= {key.partition("/")[0] for key in state["runs"]}
    rows = tuple(row for row in plan.table.rows if row.name in names)
    runs = {
        row.name: [
            state["runs"][run_key(row, s)] for s in range(plan.seeds) if run_key(row, s) in state["runs"]
        ]
        for row in rows
    }
    return build_reports(plan.table, rows, runs, plan.seeds, state["failures"])


def _write_outputs(plan: Plan, state: dict, header: list[str]) -> None:
    reports = _reports(plan, state)
    write_text_atomic(strict_json(state, indent=2) + "\n", plan.out / STATE_FILE)
    write_text_atomic(markdown_table(plan.table, reports, _dated(header)), plan.out / "table.md")
    write_text_atomic(csv_table(plan.table, reports), plan.out / "table.csv")


def _table_only(plan: Plan, state: dict, header: list[str]) -> str:
    text = markdown_table(plan.table, _reports(plan, state), _dated(header))
    title = text.splitlines()[0].removeprefix("# ")
    return "\n".join([title, *(line for line in text.splitlines() if line.startswith("|"))])


def _dated(header: list[str]) -> list[str]:
    """The header lines, the first one starting with the date and time of writing."""
    return [f"{time.strftime('%Y-%m-%d %H:%M')}, {header[0]}", *header[1:]]


def _header(plan: Plan) -> list[str]:
    """What the figures depend on: the machine, torch, the run length and the seeds (first
    line); the data and the config (second line)."""
    import torch

    device = plan.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    where = f"{_cpu()} ({os.cpu_count()} cores)"
    if device.startswith("cuda") and torch.cuda.is_available():
        where += f", {torch.cuda.get_device_name(torch.device(device))}"
    length = (
        f"budget {plan.budget_minutes:g} min per run (training and its final evaluation)"
        if plan.budget_minutes is not None
        else f"{_count(plan.max_iter, 'iteration')} per run"
    )
    seeds = ", ".join(str(s) for s in range(plan.seeds))
    config = Path(plan.config).stem + (f" with {' '.join(plan.overrides)}" if plan.overrides else "")
    return [
        f"{where}, torch {torch.__version__}, device {device} ({torch.get_num_threads()} threads); "
        f"{length}; seed{'s' * (plan.seeds > 1)} {seeds}.",
        f"Data {plan.data}{_image_counts(plan.data)}; config {config}.",
    ]


def _cpu() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _image_counts(data: Path) -> str:
    paths = shapes_dataset_paths(data)
    try:
        train = len(json.loads(paths["train_annotations"].read_text())["images"])
        val = len(json.loads(paths["val_annotations"].read_text())["images"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return f" ({train} training, {val} validation images)"
