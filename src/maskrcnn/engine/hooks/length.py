"""How long a run trains: a fixed number of iterations (`solver.max_iter`), or what fits in a
time budget (`solver.budget_minutes`, `engine.budget`). Each decides after every step whether
another follows, its learning-rate factor and the run's (predicted) length."""

import itertools
import sys
import time

import torch
from tqdm import tqdm

from maskrcnn.engine.budget import Budget, EndCost, end_images
from maskrcnn.engine.hooks.base import HookBase
from maskrcnn.engine.schedule import Schedule
from maskrcnn.engine.validation_loss import summed_losses


class FixedLength(HookBase):
    """`solver.max_iter` iterations, the schedule's phases in iterations."""

    def __init__(self, schedule: Schedule):
        self.schedule = schedule

    def before_train(self, trainer) -> None:
        self._decide(trainer)

    def after_step(self, trainer) -> None:
        self._decide(trainer)

    def _decide(self, trainer) -> None:
        trainer.go_on = trainer.iteration < self.schedule.total
        trainer.lr_factor = self.schedule.factor(trainer.iteration)
        trainer.total = self.schedule.total

    def checkpoint_state(self, trainer) -> dict:
        return {"schedule_total": trainer.total}


class BudgetFit(HookBase):
    """What fits in `solver.budget_minutes`, the schedule's phases in shares of the training
    time (`engine.budget.Budget`); rank 0 decides for every rank (each rank's clock differs)."""

    def __init__(self, schedule: Schedule):
        self.schedule = schedule
        self.budget: Budget | None = None
        self.saves_seen = 0
        self.end_began = self.end_estimate = None

    def before_train(self, trainer) -> None:
        run, solver = trainer.run, trainer.run.config.solver
        validation = run.validation
        # last.pt holds the weights and the optimizer's momentum: twice the parameters' bytes
        weights = sum(t.numel() * t.element_size() for t in run.model.state_dict().values())
        images = end_images(len(validation) if validation is not None else 0, run.context.world_size)
        timer = _end_timer(run.model, validation, run.config) if run.context.is_main else None
        self.budget = Budget(
            solver.budget_minutes * 60,
            trainer.now,
            run.started,
            self.schedule,
            EndCost(images, checkpoint_bytes=2 * weights),
            timer,
            trainer.eval_period,
            choose_eval_period=solver.eval_period == "auto" and validation is not None,
        )
        checkpoint = run.checkpoint
        if checkpoint is not None and "budget" in checkpoint:
            self.budget.load_state_dict(checkpoint["budget"])
        elif checkpoint is not None and "budget_spent" in checkpoint:  # a file of an earlier version
            state = {"spent": checkpoint["budget_spent"], "total": checkpoint.get("schedule_total", 0)}
            self.budget.load_state_dict(state)
        self.budget.time_end()
        self._decide(trainer)
        if not trainer.go_on and trainer.iteration == 0:
            raise ValueError(
                f"solver.budget_minutes {solver.budget_minutes:g}: the budget was spent before the first "
                f"step ({self.budget.elapsed():.0f} s of {self.budget.seconds:.0f} s on set-up, with "
                f"{self.budget.end_seconds():.0f} s kept for the end); nothing was trained: give a "
                "larger budget"
            )

    def after_step(self, trainer) -> None:
        budget = self.budget
        if trainer.saves > self.saves_seen:  # a checkpoint was written since: its cost
            self.saves_seen = trainer.saves
            budget.end.saved(trainer.last_save_seconds)
        budget.after_step(trainer.iteration, trainer.step_seconds, _batch_shape(trainer.images))
        trainer.say(budget.plan_message(trainer.run.config.solver.budget_minutes))
        self._decide(trainer)
        if not trainer.go_on:
            self.end_began, self.end_estimate = trainer.now(), budget.end_seconds()

    def after_train(self, trainer) -> None:
        """One line on the end's real cost beside its estimate, and the budget used."""
        budget = self.budget
        if not trainer.run.context.is_main:
            return
        end = ""
        if self.end_began is not None:  # the budget ended the run (not patience)
            end = (
                f"the end took {trainer.now() - self.end_began:.0f} s (estimated {self.end_estimate:.0f} s); "
            )
        tqdm.write(
            f"budget {trainer.run.config.solver.budget_minutes:g} min: {trainer.iteration} iterations; "
            f"{end}{budget.elapsed():.0f} of {budget.seconds:.0f} s used",
            file=sys.stderr,  # beside the plan's lines
        )

    def checkpoint_state(self, trainer) -> dict:
        # schedule_total and budget_spent: what files of earlier versions carried
        budget = self.budget
        return {
            "schedule_total": trainer.total,
            "budget_spent": budget.elapsed(),
            "budget": budget.state_dict(),
        }

    def budget_left(self) -> tuple[float, float]:
        """(seconds of the budget left, what of them the end is expected to take)."""
        return self.budget.remaining(), self.budget.end_seconds()

    def _decide(self, trainer) -> None:
        budget, context = self.budget, trainer.run.context
        decision = [not budget.finished(), budget.factor(trainer.iteration), budget.total, budget.eval_period]
        decision = torch.tensor(decision, dtype=torch.float64)
        if context.distributed:
            decision = decision.to(context.device)
            torch.distributed.broadcast(decision, src=0)
        go_on, factor, total, eval_period = decision.tolist()
        trainer.go_on, trainer.lr_factor = bool(go_on), factor
        trainer.total, trainer.eval_period = max(int(total), trainer.iteration), int(eval_period)


def _batch_shape(images: list[torch.Tensor]) -> tuple[int, int, int]:
    """What a step's cost depends on: the batch size and its padded size in 32-pixel cells
    (the first step of each such shape chooses kernels and allocates)."""
    return (len(images), *(-(-max(image.shape[dim] for image in images) // 32) for dim in (-2, -1)))


def _end_timer(model, validation, config, count: int = 4):
    """A function that runs an evaluation's work (inference and the validation loss) on the
    next `count` validation images (other ones each time) and returns each one's seconds
    (None: no validation split)."""
    if validation is None or len(validation) == 0:
        return None
    cursor = itertools.count()
    device = next(model.parameters()).device

    def time_images() -> list[float]:
        seconds = []
        for _ in range(count):
            began = time.perf_counter()
            sample = validation[next(cursor) % len(validation)]
            if sample is None:
                continue
            model.eval()
            with torch.no_grad():
                model.predict([sample[0]], normalized=True, score_threshold=0.0)
            summed_losses(model, [sample], config, device)
            seconds.append(time.perf_counter() - began)
        model.train()
        return seconds

    return time_images
