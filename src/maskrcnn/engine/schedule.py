"""The learning-rate schedule, written as fractions of the run, and fitting a run to a time budget.

The paper's recipe warms up linearly and then divides the rate by 10 at fixed iterations
(`shape: step`). Written as fractions of the run (a drop at 60000 of 90000 iterations is a
drop at 2/3), the same recipe serves a run of any length, so that a run given minutes instead
of iterations (`solver.budget_minutes`) keeps the recipe's shape at the length its budget
allows. Linear decay to zero and cosine decay are the other shapes (Li, Yumer and Ramanan,
"Budgeted Training", ICLR 2020, found linear decay robust when the length is fixed in advance).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

from maskrcnn.config import SolverConfig

SHAPES = ("step", "linear", "cosine")


@dataclass(frozen=True)
class Schedule:
    """Multiplier of base_lr at each iteration of a run of `total` iterations.

    warmup: fraction of the run spent warming up from `warmup_factor` to 1; drops: fractions
    of the run where the "step" shape multiplies the rate by `gamma`.
    """

    total: int
    shape: str = "step"
    warmup: float = 0.0
    warmup_factor: float = 1.0
    drops: tuple[float, ...] = ()
    gamma: float = 0.1

    @classmethod
    def from_solver(cls, solver: SolverConfig, total: int | None = None) -> "Schedule":
        """The config's schedule (warm-up and drops given in iterations of solver.max_iter),
        as fractions, for a run of `total` iterations (default: solver.max_iter)."""
        length = solver.max_iter
        return cls(
            total=total or length,
            shape=solver.schedule,
            warmup=solver.warmup_iters / length,
            warmup_factor=solver.warmup_factor,
            drops=tuple(sorted(step / length for step in solver.steps)),
            gamma=solver.gamma,
        )

    def with_total(self, total: int) -> "Schedule":
        return Schedule(total, self.shape, self.warmup, self.warmup_factor, self.drops, self.gamma)

    @property
    def warmup_iters(self) -> int:
        return round(self.warmup * self.total)

    @property
    def steps(self) -> tuple[int, ...]:
        """The iterations where the "step" shape drops the rate."""
        return tuple(round(drop * self.total) for drop in self.drops)

    def factor(self, iteration: int) -> float:
        """Multiplier of base_lr at `iteration` (0-based)."""
        if self.shape == "step":
            factor = self.gamma ** sum(iteration >= step for step in self.steps)
        else:
            progress = min(iteration / max(self.total, 1), 1.0)
            factor = 1 - progress if self.shape == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
        warmup = self.warmup_iters
        if iteration < warmup:
            progress = iteration / warmup
            factor *= self.warmup_factor * (1 - progress) + progress
        return factor

    def describe(self) -> str:
        warmup = f"warm-up {self.warmup_iters}"
        if self.shape == "step":
            return f"{self.total} iterations ({warmup}, drops at {', '.join(map(str, self.steps)) or 'none'})"
        return f"{self.total} iterations ({warmup}, {self.shape} decay to zero)"


class BudgetFitter:
    """Fits the number of iterations to a time budget from the measured step time.

    The budget covers the whole run: what was spent before training (set-up), the steps, and
    `reserve` seconds kept for what follows them (the final evaluation and checkpoint). The
    step time is measured after `skip` iterations (the first ones are slower: allocations,
    caches) as a running mean over the last `window` steps, and the fit is repeated as the
    run goes, so that a slow spell of the machine shortens the run instead of overrunning it.
    """

    def __init__(
        self,
        budget_seconds: float,
        reserve_seconds: float,
        clock: Callable[[], float],
        started: float,
        spent_before: float = 0.0,
        skip: int = 3,
        window: int = 10,
    ):
        self.budget = budget_seconds
        self.reserve = reserve_seconds
        self.clock = clock
        self.started = started  # clock() when this process's share of the budget began
        self.spent_before = spent_before  # seconds of the budget used by an earlier, resumed run
        self.skip = skip
        self.window = window
        self.step_times: list[float] = []
        self.seen = 0
        self.announced = False  # the first fit is said in a log line

    def elapsed(self) -> float:
        """Seconds of the budget used so far, earlier runs of a resumed one included."""
        return self.spent_before + self.clock() - self.started

    def remaining(self) -> float:
        return self.budget - self.elapsed()

    def record(self, seconds: float) -> None:
        """One training step's wall time."""
        self.seen += 1
        if self.seen > self.skip:
            self.step_times = (self.step_times + [seconds])[-self.window :]

    @property
    def ready(self) -> bool:
        return bool(self.step_times)

    def fit(self, iteration: int) -> int:
        """The run's length: `iteration` done, plus the steps that fit in what remains (none
        once the budget is spent: the run then ends at `iteration`)."""
        step = sum(self.step_times) / len(self.step_times)
        return iteration + max(int((self.remaining() - self.reserve) // step), 0)
