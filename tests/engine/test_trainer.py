"""The trainer: learning, exact resume, clean interruption, NaN handling, DDP."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from maskrcnn.data.shapes import make_shapes
from maskrcnn.engine.metrics import read_metrics
from maskrcnn.engine.stop import Interrupted
from maskrcnn.engine.trainer import NonFiniteLossError, train
from maskrcnn.interop.load import load_model
from maskrcnn.modeling.fpn import FPN
from maskrcnn.modeling.mask_rcnn import MaskRCNN
from maskrcnn.modeling.weight_cache import inference_pass
from maskrcnn.testing import shapes_training_config as tiny_config

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "shapes.yaml"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    make_shapes(root, 8, 2, seed=0)
    return root


def logged_losses(output: Path) -> list[dict]:
    """The per-iteration loss records (evaluation records carry AP instead)."""
    records = [r for r in read_metrics(output / "metrics.jsonl") if "loss" in r]
    return [{k: v for k, v in r.items() if k.startswith("loss") or k == "iteration"} for r in records]


def test_a_tiny_model_learns(shapes, tmp_path):
    # Four images seen again and again: the loss must fall well below where it started.
    make_shapes(tmp_path / "four", 4, 1, seed=3)
    # lr 0.01: at 0.02 this batch-of-2 run falls to about half its loss and then turns unstable,
    # so where it ends depends on float rounding.
    config = tiny_config(tmp_path / "four", tmp_path / "run", "solver.max_iter=40", "solver.base_lr=0.01")
    model = train(config)
    losses = [r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    assert len(losses) == 40
    # Some 5 consecutive steps average well below the first 5. (Not the last 5: once the RPN
    # proposes objects, more RoIs are foreground and the box and mask terms grow again.)
    windows = [sum(losses[i : i + 5]) / 5 for i in range(5, len(losses) - 4)]
    assert min(windows) < 0.6 * sum(losses[:5]) / 5, losses
    assert isinstance(model, MaskRCNN) and not model.training
    assert model.config.class_names == ("__background__", "circle", "square", "triangle")
    assert (tmp_path / "run" / "model_final.pt").exists() and (tmp_path / "run" / "loss_curves.png").exists()
    # the final evaluation on the validation split is logged and written
    final = read_metrics(tmp_path / "run" / "metrics.jsonl")[-1]
    assert final["iteration"] == 40 and 0 <= final["segm_AP"] <= 1
    assert (tmp_path / "run" / "metrics.json").exists()


def test_resume_continues_exactly(shapes, tmp_path):
    straight = tmp_path / "straight"
    train(tiny_config(shapes, straight, "solver.max_iter=6"))
    split = tmp_path / "split"
    train(tiny_config(shapes, split, "solver.max_iter=3"))
    assert torch.load(split / "last.pt", weights_only=True)["iteration"] == 3
    train(tiny_config(shapes, split, "solver.max_iter=6"), resume=True)
    expected, resumed = logged_losses(straight), logged_losses(split)
    assert [r["iteration"] for r in resumed] == list(range(1, 7))
    for a, b in zip(expected, resumed):
        for key in a:
            assert b[key] == pytest.approx(a[key], abs=1e-6, rel=0), (a["iteration"], key)


def test_non_finite_loss_stops_with_the_term_and_keeps_the_last_checkpoint(shapes, tmp_path, monkeypatch):
    calls = {"count": 0}
    original = MaskRCNN.losses

    def poisoned(self, images, targets):
        losses = original(self, images, targets)
        calls["count"] += 1
        if calls["count"] == 3:
            losses["loss_mask"] = losses["loss_mask"] * float("nan")
        return losses

    monkeypatch.setattr(MaskRCNN, "losses", poisoned)
    output = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError, match="iteration 3: loss term loss_mask is nan"):
        train(tiny_config(shapes, output, "solver.max_iter=5", "solver.checkpoint_period=2"))
    assert torch.load(output / "last.pt", weights_only=True)["iteration"] == 2


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1], ids=lambda s: s.name)
def test_a_signal_to_the_process_group_saves_the_last_iteration_and_exits_as_a_shell_expects(
    shapes, tmp_path, signum
):
    """What `timeout`, SLURM's scancel and Ctrl-C do: the signal reaches every process of the
    job, DataLoader workers included."""
    output = tmp_path / "interrupted"
    overrides = [str(CONFIG), *_override_args(shapes, output, "solver.max_iter=400", "data.num_workers=1")]
    script = "import sys; from maskrcnn.cli.main import main; sys.exit(main(['train', *sys.argv[1:]]))"
    process = subprocess.Popen(
        [sys.executable, "-c", script, *overrides], stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    metrics = output / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 2):
        time.sleep(0.2)
    os.killpg(process.pid, signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr and "killed by signal" not in stderr, stderr
    saved = torch.load(output / "last.pt", weights_only=True)["iteration"]
    assert 2 <= saved < 400
    assert f"stopped by {signal.Signals(signum).name} at iteration {saved}" in stderr
    assert "--resume" in stderr.splitlines()[-1]
    assert len([r for r in read_metrics(metrics) if "loss" in r]) == saved
    assert not (output / "model_final.pt").exists()
    if signum == signal.SIGTERM:  # and the run continues from there
        train(tiny_config(shapes, output, f"solver.max_iter={saved + 2}"), resume=True)
        losses = [r["iteration"] for r in read_metrics(metrics) if "loss" in r]
        assert losses == list(range(1, saved + 3))


def _override_args(shapes: Path, output: Path, *extra: str) -> list[str]:
    config = tiny_config(shapes, output)
    return [
        f"data.train_json={config.data.train_json}",
        f"data.train_images={config.data.train_images}",
        f"data.val_json={config.data.val_json}",
        f"data.val_images={config.data.val_images}",
        f"output_dir={output}",
        "data.num_workers=0",
        "data.min_sizes_train=[128]",
        "data.max_size_train=176",
        "solver.log_period=1",
        "device=cpu",
        *extra,
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, shapes: str, output: str, result_dir: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    results = Path(result_dir)
    config = tiny_config(Path(shapes), Path(output), "solver.max_iter=3", "data.images_per_batch=1")
    with open(results / f"rank{rank}.stderr", "w") as stderr:
        os.dup2(stderr.fileno(), 2)  # what PyTorch's C++ code prints, too
        with warnings.catch_warnings(record=True) as caught:  # as `python -W default` shows them
            model = train(config)
    lines = [f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}" for w in caught]
    (results / f"rank{rank}.warnings").write_text("".join(f"{line}\n" for line in lines))
    torch.save(model.state_dict(), results / f"rank{rank}.pt")


def test_two_process_ddp_ends_with_identical_weights(shapes, tmp_path, monkeypatch):
    output = tmp_path / "ddp"
    monkeypatch.setenv("PYTHONWARNINGS", "default")  # the workers show every warning once
    mp.spawn(
        _ddp_worker, args=(2, _free_port(), str(shapes), str(output), str(tmp_path)), nprocs=2, join=True
    )
    first = torch.load(tmp_path / "rank0.pt", weights_only=True)
    second = torch.load(tmp_path / "rank1.pt", weights_only=True)
    saved = torch.load(output / "model_final.pt", weights_only=True)["model"]
    for key, value in first.items():
        assert torch.equal(value, second[key]), key
        assert torch.equal(value, saved[key]), key  # rank 0's checkpoint holds the trained weights
    # only rank 0 logs: one record per iteration, not two
    assert [r["iteration"] for r in read_metrics(output / "metrics.jsonl") if "loss" in r] == [1, 2, 3]
    # No warning, in particular not DDP's "Grad strides do not match bucket view strides"
    # (each gradient has its parameter's strides, so DDP copies none of them strided).
    for rank in range(2):
        assert (tmp_path / f"rank{rank}.warnings").read_text() == ""
        assert "warning" not in (tmp_path / f"rank{rank}.stderr").read_text().lower()
    assert json.loads((output / "metrics.jsonl").read_text().splitlines()[0])["loss"] > 0


def test_evaluations_use_the_weights_of_their_step(shapes, tmp_path, monkeypatch):
    """With frozen BatchNorm folded into the convolutions, every evaluation (and the model
    `train` returns) computes what a fresh model with that step's weights computes, although
    the fused SGD update does not bump the parameters' version counters."""
    recorded = []
    original = FPN.forward

    def recording(self, images):
        pyramid = original(self, images)
        if not torch.is_grad_enabled():  # an evaluation, not a training step
            state = {k: v.detach().clone() for k, v in self.state_dict().items()}
            recorded.append((state, images.clone(), [level.clone() for level in pyramid.values()]))
        return pyramid

    monkeypatch.setattr(FPN, "forward", recording)
    config = tiny_config(
        shapes, tmp_path / "run", "solver.max_iter=4", "solver.eval_period=2", "model.backbone.norm=frozen_bn"
    )
    model = train(config)
    monkeypatch.setattr(FPN, "forward", original)
    assert len(recorded) == 8  # two validation images at iterations 2 and 4, for the loss and predicted
    fresh = load_model(tmp_path / "run" / "model_final.pt", device="cpu")
    final_state = fresh.state_dict()
    for state, images, pyramid in recorded:
        fresh.backbone.load_state_dict(state)
        with torch.no_grad(), inference_pass():
            expected = fresh.backbone(images).values()
        for got, want in zip(pyramid, expected):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # the returned model is the final one, also under its own (warm) inference path
    fresh.load_state_dict(final_state)
    image = recorded[-1][1]
    with torch.no_grad(), inference_pass():
        for got, want in zip(model.backbone(image).values(), fresh.backbone(image).values()):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore:solver.precision fp16 on the CPU:RuntimeWarning")
def test_float16_resume_restores_the_loss_scale(shapes, tmp_path):
    """float16 training scales the loss, halves the scale when gradients overflow and doubles
    it after a run of good steps: a resumed run goes on with the scale and the count of good
    steps the checkpoint had."""
    fp16 = ("solver.precision=fp16", "model.backbone.norm=frozen_bn")
    straight = tmp_path / "straight"
    train(tiny_config(shapes, straight, "solver.max_iter=2", *fp16))
    split = tmp_path / "split"
    train(tiny_config(shapes, split, "solver.max_iter=1", *fp16))
    assert torch.load(split / "last.pt", weights_only=True)["scaler"]["_growth_tracker"] == 1
    train(tiny_config(shapes, split, "solver.max_iter=2", *fp16), resume=True)
    expected, resumed = logged_losses(straight), logged_losses(split)
    assert [r["iteration"] for r in resumed] == [1, 2]
    for a, b in zip(expected, resumed):
        for key in a:
            assert b[key] == pytest.approx(a[key], abs=1e-6, rel=0), (a["iteration"], key)
    final = torch.load(split / "last.pt", weights_only=True)["scaler"]
    assert final == torch.load(straight / "last.pt", weights_only=True)["scaler"]
    assert final["_growth_tracker"] == 2


def test_resume_drops_logs_past_the_checkpoint(shapes, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output = tmp_path / "run"
    # a run checkpointed at 2 that went on logging to 5 before it died
    train(tiny_config(shapes, output, "solver.max_iter=5", "solver.checkpoint_period=2"))
    last = torch.load(output / "last.pt", weights_only=True)
    last["iteration"] = 2
    torch.save(last, output / "last.pt")
    assert [r["iteration"] for r in logged_losses(output)] == [1, 2, 3, 4, 5]
    train(tiny_config(shapes, output, "solver.max_iter=3"), resume=True)
    records = read_metrics(output / "metrics.jsonl")
    assert [r["iteration"] for r in records if "loss" in r] == [1, 2, 3]
    assert max(r["iteration"] for r in records) == 3  # the earlier run's final AP record is gone too
    events = EventAccumulator(str(output / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3]


def test_classes_from_the_dataset_are_announced(shapes, tmp_path, capsys):
    train(tiny_config(shapes, tmp_path / "run", "solver.max_iter=1", "model.num_classes=91"))
    out = capsys.readouterr().out
    assert "model.num_classes: 4 from" in out and "not 91" in out


def test_a_second_run_into_the_same_folder_is_refused_unless_replaced(shapes, tmp_path):
    output = tmp_path / "run"
    train(tiny_config(shapes, output, "solver.max_iter=2"))
    before = (output / "metrics.jsonl").read_text()
    with pytest.raises(ValueError, match=r"holds a training run .*--resume.*--overwrite"):
        train(tiny_config(shapes, output, "solver.max_iter=1"))
    assert (output / "metrics.jsonl").read_text() == before
    with pytest.raises(ValueError, match="give one"):
        train(tiny_config(shapes, output, "solver.max_iter=1"), resume=True, overwrite=True)
    train(tiny_config(shapes, output, "solver.max_iter=1", "data.val_json=''"), overwrite=True)
    records = read_metrics(output / "metrics.jsonl")
    assert [r["iteration"] for r in records] == [1]
    assert not (output / "metrics.json").exists()  # the first run's evaluation is gone too
    # every line of the log is strict JSON (AP of an absent size range is null, not NaN)
    for line in before.splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in metrics.jsonl"))


class FakeTime:
    """time for the trainer: a clock that moves only when a training step runs."""

    def __init__(self, step_seconds):
        self.now, self.step_seconds, self.steps = 0.0, step_seconds, 0

    def perf_counter(self) -> float:
        return self.now

    monotonic = perf_counter

    def step(self) -> None:
        self.steps += 1
        self.now += self.step_seconds(self.steps)


def _budgeted_run(shapes, output, monkeypatch, step_seconds, stop_at=None, resume=False):
    from maskrcnn.engine import trainer as trainer_module

    clock = FakeTime(step_seconds)
    original = MaskRCNN.losses

    def timed(self, images, targets):
        clock.step()
        if stop_at is not None and clock.steps == stop_at:
            os.kill(os.getpid(), signal.SIGUSR1)
        return original(self, images, targets)

    monkeypatch.setattr(trainer_module, "time", clock)
    monkeypatch.setattr(trainer_module, "process_seconds", lambda: 0.0)  # the stubbed clock's start
    monkeypatch.setattr(MaskRCNN, "losses", timed)
    budget = ("solver.budget_minutes=0.5", "data.val_json=''", "solver.log_period=5")
    config = tiny_config(shapes, output, *budget)
    train(config, resume=resume)
    return torch.load(output / "last.pt", weights_only=True)


def test_a_budget_fits_the_run_to_the_measured_step_time(shapes, tmp_path, monkeypatch, capsys):
    steady = _budgeted_run(shapes, tmp_path / "steady", monkeypatch, lambda step: 1.0)
    # 30 s; no validation split: the end is two checkpoints of the tiny model (guessed at
    # 0.1 s each and a little; this clock moves only in steps) and a margin of 1 % (0.3 s);
    # 1 s per step: 29 steps
    assert steady["iteration"] == steady["schedule_total"] == 29
    assert steady["budget_spent"] == 29
    assert steady["budget"]["progress"] == pytest.approx(1.0, abs=0.04)
    err = capsys.readouterr().err
    assert "budget 0.5 min: about 29 iterations" in err
    assert "budget 0.5 min: 29 iterations; the end took 0 s (estimated 1 s); 29 of 30 s used" in err
    slow = _budgeted_run(shapes, tmp_path / "slow", monkeypatch, lambda step: 1.0 if step <= 10 else 3.0)
    assert slow["iteration"] < steady["iteration"]
    assert slow["budget_spent"] <= 30 - 0.3  # the last steps' pace decides the last step


def test_a_budgeted_run_resumes_its_fit(shapes, tmp_path, monkeypatch):
    output = tmp_path / "run"
    with pytest.raises(Interrupted):
        _budgeted_run(shapes, output, monkeypatch, lambda step: 1.0, stop_at=8)
    stopped = torch.load(output / "last.pt", weights_only=True)
    assert stopped["iteration"] == 8 and stopped["budget_spent"] == pytest.approx(8.0)
    resumed = _budgeted_run(shapes, output, monkeypatch, lambda step: 1.0, resume=True)
    assert resumed["iteration"] == resumed["schedule_total"] == 29  # as the uninterrupted run
    assert resumed["budget"]["progress"] == pytest.approx(1.0, abs=0.04)
    assert [r["iteration"] for r in logged_losses(output)] == [*range(5, 26, 5), 29]


def _without_segmentations(shapes: Path, out: Path) -> Path:
    """The shapes data with every annotation's segmentation removed (boxes kept)."""
    import shutil

    shutil.copytree(shapes, out)
    path = out / "annotations" / "instances_train.json"
    document = json.loads(path.read_text())
    for annotation in document["annotations"]:
        del annotation["segmentation"]
    path.write_text(json.dumps(document))
    return out


def test_a_mask_model_refuses_a_split_without_one_usable_mask(shapes, tmp_path):
    data = _without_segmentations(shapes, tmp_path / "boxes")
    count = len(json.loads((data / "annotations" / "instances_train.json").read_text())["annotations"])
    config = tiny_config(data, tmp_path / "run", "solver.max_iter=1", "data.val_json=''")
    with pytest.warns(UserWarning), pytest.raises(ValueError) as refused:
        train(config)
    message = str(refused.value)
    dropped = f"dropped {count} annotations ({count} no segmentation)"
    assert f"no usable instance to train on ({dropped})" in message
    assert "the model needs masks" in message and "model.masks=false to train boxes only" in message
    assert not (tmp_path / "run" / "last.pt").exists()


def _as_crowd(shapes: Path, out: Path, share: int) -> Path:
    """The shapes data with the first `share` training annotations marked iscrowd=1 (as CVAT
    writes its masks); all of them when share is 0."""
    import shutil

    shutil.copytree(shapes, out)
    path = out / "annotations" / "instances_train.json"
    document = json.loads(path.read_text())
    for annotation in document["annotations"][: share or None]:
        annotation["iscrowd"] = 1
    path.write_text(json.dumps(document))
    return out


def test_crowd_regions_are_said_to_be_left_out_of_training(shapes, tmp_path, capsys):
    data = _as_crowd(shapes, tmp_path / "crowd", 0)
    count = len(json.loads((data / "annotations" / "instances_train.json").read_text())["annotations"])
    with pytest.raises(ValueError) as refused:
        train(tiny_config(data, tmp_path / "run", "solver.max_iter=1", "data.val_json=''"))
    left_out = f"{count} crowd regions (iscrowd=1) left out: they are not training targets"
    assert f"no usable instance to train on ({left_out})" in str(refused.value)
    # two of them: trained on the others, and said once
    data = _as_crowd(shapes, tmp_path / "some", 2)
    train(tiny_config(data, tmp_path / "run2", "solver.max_iter=1", "data.val_json=''"))
    out = capsys.readouterr().out
    expected = f"2 crowd regions (iscrowd=1) left out: they are not training targets, {count - 2} instances"
    assert out.count(expected) == 1


def test_a_box_only_model_trains_on_annotations_kept_by_their_boxes(shapes, tmp_path, capsys):
    data = _without_segmentations(shapes, tmp_path / "boxes")
    config = tiny_config(data, tmp_path / "run", "solver.max_iter=2", "data.val_json=''", "model.masks=false")
    with pytest.warns(UserWarning, match="kept .* annotations without a segmentation by its box"):
        model = train(config)
    assert "model.masks false: training boxes only, on" in capsys.readouterr().out
    assert not model.config.masks and (tmp_path / "run" / "model_final.pt").exists()


def _run_files(output: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(output.iterdir()) if p.is_file()}


def test_resuming_a_complete_run_says_so_and_writes_nothing(shapes, tmp_path, capsys):
    output = tmp_path / "run"
    train(tiny_config(shapes, output, "solver.max_iter=2", "data.val_json=''"))
    before = _run_files(output)
    capsys.readouterr()
    model = train(tiny_config(shapes, output, "solver.max_iter=2", "data.val_json=''"), resume=True)
    printed = capsys.readouterr().out
    assert f"{output}: the run is complete (model_final.pt at iteration 2); nothing was written" in printed
    assert (
        "resume with a larger solver.max_iter" in printed
        and f"init_weights={output}/model_final.pt" in printed
    )
    assert _run_files(output) == before
    assert isinstance(model, MaskRCNN) and not model.training


def test_a_complete_budgeted_run_stays_complete_under_a_larger_budget(shapes, tmp_path, monkeypatch, capsys):
    output = tmp_path / "run"
    _budgeted_run(shapes, output, monkeypatch, lambda step: 1.0)
    before = _run_files(output)
    capsys.readouterr()
    config = tiny_config(shapes, output, "solver.budget_minutes=5", "data.val_json=''")
    train(config, resume=True)  # ten times the budget: a budget's schedule has ended all the same
    printed = capsys.readouterr().out
    assert "the run is complete (model_final.pt at iteration 29); nothing was written" in printed
    assert "larger solver.max_iter" not in printed and "start a new run from its weights" in printed
    assert _run_files(output) == before


def test_resuming_past_the_length_asked_for_is_refused(shapes, tmp_path):
    output = tmp_path / "run"
    with pytest.raises(Interrupted):
        _stopped_run(shapes, output, stop_at=3)
    before = _run_files(output)
    with pytest.raises(ValueError, match=r"the run stopped at iteration 3, past the 2 iterations this"):
        train(tiny_config(shapes, output, "solver.max_iter=2", "data.val_json=''"), resume=True)
    assert _run_files(output) == before  # (the old code wrote model_final.pt, then failed on the log)


def test_resume_without_a_checkpoint_starts_from_the_beginning(shapes, tmp_path, capsys):
    output = tmp_path / "run"
    output.mkdir()
    (output / "metrics.jsonl").write_text('{"iteration": 7, "loss": 1.0}\n')  # killed before last.pt
    train(tiny_config(shapes, output, "solver.max_iter=2", "data.val_json=''"), resume=True)
    assert "--resume: no " in capsys.readouterr().out
    assert [r["iteration"] for r in logged_losses(output)] == [1, 2]  # the stale log is gone


def _stopped_run(shapes, output, stop_at):
    """A run of 20 iterations stopped by SIGUSR1 during its `stop_at`-th step (before its first log)."""
    original, steps = MaskRCNN.losses, []

    def losses(self, images, targets):
        steps.append(1)
        if len(steps) == stop_at:
            os.kill(os.getpid(), signal.SIGUSR1)
        return original(self, images, targets)

    MaskRCNN.losses = losses
    try:
        train(tiny_config(shapes, output, "solver.max_iter=20", "data.val_json=''", "solver.log_period=100"))
    finally:
        MaskRCNN.losses = original


def test_a_budget_spent_on_set_up_trains_nothing_and_says_so(shapes, tmp_path, monkeypatch):
    from maskrcnn.engine import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "process_seconds", lambda: 29.9)  # 29.9 of 30 s gone already
    config = tiny_config(shapes, tmp_path / "run", "solver.budget_minutes=0.5", "data.val_json=''")
    with pytest.raises(ValueError, match=r"budget was spent before the first step \(30 s of 30 s on set-up"):
        train(config)
    assert not (tmp_path / "run" / "model_final.pt").exists()


def test_a_users_hook_sees_every_step_and_every_evaluation(shapes, tmp_path):
    from maskrcnn.engine.hooks import HookBase

    class Watcher(HookBase):
        def __init__(self):
            self.calls, self.losses, self.aps = [], [], []

        def before_train(self, trainer):
            self.calls.append(("before", trainer.iteration))

        def after_step(self, trainer):
            self.losses.append((trainer.iteration, float(trainer.loss), trainer.lr))

        def after_evaluation(self, trainer, record, final):
            assert trainer.metrics["segm"]["AP"] == record["segm_AP"]  # the figures in full, and flat
            self.aps.append((trainer.iteration, record["segm_AP"], final))

        def after_train(self, trainer):
            self.calls.append(("after", trainer.iteration))

        def close(self, trainer):
            self.calls.append(("close", trainer.iteration))

    watcher = Watcher()
    config = tiny_config(shapes, tmp_path / "run", "solver.max_iter=4", "solver.eval_period=2")
    train(config, hooks=[watcher])
    assert [iteration for iteration, _, _ in watcher.losses] == [1, 2, 3, 4]
    logged = {r["iteration"]: r["loss"] for r in logged_losses(tmp_path / "run")}
    assert watcher.losses[-1][1] == pytest.approx(logged[4], rel=1e-6)  # the step the log saw
    # the periodic evaluation at 2 (none at 4: the final one scores it), then the final one
    assert [(i, final) for i, _, final in watcher.aps] == [(2, False), (4, True)]
    assert watcher.calls == [("before", 0), ("after", 4), ("close", 4)]
