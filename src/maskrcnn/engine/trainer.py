"""The training loop: `Trainer.run_step` (data, losses, backward, update) and a list of hooks
for everything around it (`engine/hooks/`: the run's length, stop signals, the log, periodic
evaluation, checkpoints), as in detectron2's `SimpleTrainer` and `HookBase`."""

import contextlib
import math
import signal
import time

import torch

from maskrcnn.choices import best_metric
from maskrcnn.config import TrainConfig
from maskrcnn.engine import distributed
from maskrcnn.engine.budget import process_seconds
from maskrcnn.engine.hooks import HookBase
from maskrcnn.engine.hooks.best_model import BestModel
from maskrcnn.engine.hooks.checkpoint import Checkpointer
from maskrcnn.engine.hooks.evaluation import PeriodicEvaluation
from maskrcnn.engine.hooks.length import BudgetFit, FixedLength
from maskrcnn.engine.hooks.metrics_log import MetricsLogger
from maskrcnn.engine.hooks.stop_signals import StopSignals
from maskrcnn.engine.metrics import MetricsLog
from maskrcnn.engine.progress import TrainingProgress
from maskrcnn.engine.run_folder import LAST_CHECKPOINT, starting_point
from maskrcnn.engine.schedule import Schedule
from maskrcnn.engine.stop import Interrupted, signal_name
from maskrcnn.engine.training_setup import TrainingRun, prepare_run
from maskrcnn.interop.load import load_model
from maskrcnn.modeling.mask_rcnn import MaskRCNN
from maskrcnn.precision import autocast_context


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite."""


class Trainer:
    """Runs steps until the length hook says the run is over, calling the hooks around them.

    The state the hooks read and set: `iteration` (steps done); `go_on`, `lr_factor` and
    `total` (set by the length hook: another step follows, its learning-rate multiplier, the
    run's length); after a step `losses` and `loss` (detached), `lr`, `images`, `step_seconds`,
    `data_seconds`; `stopping` (set by the stop hook); `saves` and `last_save_seconds` (set by
    the checkpoint hook); `eval_period` (0: no periodic evaluation; a budget run's length hook
    may choose it), `stop_reason` (set by a hook that ends the run early: patience), `best`
    (the best evaluation so far, `hooks.best_model`) and `metrics` (the last evaluation's, as
    `evaluate_results` gives them; rank 0). All time is read through `now` and `timer`
    (`time`'s clocks).
    """

    def __init__(self, run: TrainingRun, hooks: list[HookBase]):
        self.run, self.hooks = run, list(hooks)
        self.iteration = run.start_iter
        self.go_on, self.lr_factor, self.total = True, 1.0, run.config.solver.max_iter
        self.losses: dict[str, torch.Tensor] = {}
        self.loss = self.lr = None
        self.images: list[torch.Tensor] = []
        self.step_started = self.step_seconds = self.data_seconds = 0.0
        self.stopping, self.stop_signum = False, None
        self.saves, self.last_save_seconds = 0, 0.0
        period = run.config.solver.eval_period
        self.eval_period = 0 if period == "auto" else period
        self.stop_reason: str | None = None
        self.best: dict | None = None
        self.metrics: dict | None = None
        self.log = MetricsLog(run.output_dir, enabled=run.context.is_main, start_iteration=run.start_iter)
        self.progress = TrainingProgress(self.total, run.start_iter, enabled=run.context.is_main)

    @staticmethod
    def now() -> float:
        """The budget's clock (seconds, monotonic)."""
        return time.monotonic()

    @staticmethod
    def timer() -> float:
        """The steps' clock."""
        return time.perf_counter()

    def say(self, message: str | None) -> None:
        """One line for the person watching (rank 0; between bar redraws on a terminal)."""
        self.progress.write(message)

    def train(self) -> MaskRCNN:
        """before_train, steps with after_step until the run is over, after_train; close always.
        A stop signal ends it after the step it came in, with last.pt saved: `Interrupted`."""
        try:
            for hook in self.hooks:
                hook.before_train(self)
            self.progress.set_total(self.total)
            while self.go_on and not self.stopping:
                self.run_step()
                for hook in self.hooks:
                    hook.after_step(self)
                self.progress.set_total(self.total)
            if self.stopping:
                signum = self.stop_signum or signal.SIGTERM  # a rank another rank's signal stopped
                raise Interrupted(
                    signum,
                    f"stopped by {signal_name(signum)} at iteration {self.iteration}: "
                    f"{self.run.output_dir / LAST_CHECKPOINT} saved; continue with --resume",
                )
            self.progress.close()  # the evaluation's lines after the bar, not inside it
            for hook in reversed(self.hooks):
                hook.after_train(self)
        finally:
            for hook in reversed(self.hooks):
                hook.close(self)
            self.log.close()
            self.progress.close()  # an error's message must not be glued to a half-drawn bar
        return self.run.model.eval()

    def run_step(self) -> None:
        """One optimizer step on the next batch, at the learning rate the length hook chose.

        The rate is a function of the iteration (of the training time spent, under a budget)
        alone, so a resumed run follows it exactly. (A torch LR scheduler would warn whenever
        float16 loss scaling skips a step.)"""
        run, solver = self.run, self.run.config.solver
        self.step_started = self.timer()
        images, targets = _to_device(next(run.batches), run.context.device)
        self.data_seconds = self.timer() - self.step_started
        self.lr = solver.base_lr * self.lr_factor
        for group in run.optimizer.param_groups:
            group["lr"] = self.lr
        with autocast_context(solver.precision, images[0].device, "solver.precision"):
            losses = run.trainable(images, targets)
        self.losses = {k: v.float() for k, v in losses.items()}
        self.loss = sum(self.losses.values())
        _check_finite(self.loss, self.losses, self.iteration)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(self.loss).backward()
        if solver.clip_grad_norm > 0:
            run.scaler.unscale_(run.optimizer)
            torch.nn.utils.clip_grad_norm_(run.parameters, solver.clip_grad_norm)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        # Hooks read the step's values, not its (spent) graph.
        self.loss = self.loss.detach()
        self.losses = {k: v.detach() for k, v in self.losses.items()}
        self.iteration += 1
        self.images = images
        self.step_seconds = self.timer() - self.step_started


def default_hooks(config: TrainConfig) -> list[HookBase]:
    """The trainer's own hooks, in the order they act after a step: the run's length (fixed or
    a time budget), stop signals, the log, periodic evaluation, the best model and patience,
    checkpoints."""
    solver, model = config.solver, config.model
    schedule = Schedule.from_solver(solver)
    length = BudgetFit(schedule) if solver.budget_minutes > 0 else FixedLength(schedule)
    logger = MetricsLogger(solver.log_period, budget=length if isinstance(length, BudgetFit) else None)
    return [
        length,
        StopSignals(),
        logger,
        PeriodicEvaluation(),
        BestModel(best_metric(solver.best_metric, model.masks, model.keypoints), solver.patience),
        Checkpointer(solver.checkpoint_period),
    ]


def train(
    config: TrainConfig, resume: bool = False, overwrite: bool = False, hooks: list[HookBase] = ()
) -> MaskRCNN:
    """Train Mask R-CNN as `config` says; returns the trained model (on every process).

    An output directory that holds a run is continued with resume=True or replaced with
    overwrite=True (its run files are removed first); otherwise ValueError, so that a
    second run never mixes its logs and checkpoints into the first one's. A complete run
    resumed is returned as it is (`run_folder.starting_point`).

    hooks: the caller's own (`engine.hooks.HookBase`), called after the trainer's: they see
    every step and every evaluation.

    SIGINT, SIGTERM or SIGUSR1 (to this process or its whole process group, DataLoader
    workers included) end the run after the current iteration: last.pt is saved and
    `engine.stop.Interrupted` is raised, carrying the signal (exit code 128 + its number).
    """
    started = Trainer.now() - process_seconds()  # a time budget covers the set-up too
    context = distributed.setup(config.device)
    try:
        with contextlib.ExitStack() as cleanup:
            checkpoint, complete = starting_point(config, resume, overwrite, context)
            if complete is not None:
                return load_model(complete, device=context.device)
            run = prepare_run(config, context, cleanup, checkpoint, started)
            return Trainer(run, [*default_hooks(run.config), *hooks]).train()
    finally:
        distributed.teardown(context)


def _to_device(batch, device: torch.device):
    images, targets = batch
    images = [image.to(device, non_blocking=True) for image in images]
    targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
    return images, targets


def _check_finite(total: torch.Tensor, losses: dict[str, torch.Tensor], iteration: int) -> None:
    # One host sync per iteration; the terms are inspected only to name the culprit.
    if math.isfinite(total.item()):
        return
    for name, value in losses.items():
        if not math.isfinite(value.item()):
            raise NonFiniteLossError(
                f"iteration {iteration + 1}: loss term {name} is {value.item()}; training stopped, "
                "the last checkpoint is kept (lower solver.base_lr or set solver.clip_grad_norm)"
            )
