"""The learning-rate schedule, written as fractions of the run, and fitting a run to a time budget.

The paper's recipe warms up linearly and then divides the rate by 10 at fixed iterations
(`shape: step`). Written as fractions of the run (a drop at 60000 of 90000 iterations is a
drop at 2/3), the same recipe serves a run of any length, so that a run given minutes instead
of iterations (`solver.budget_minutes`) keeps the recipe's shape at the length its budget
allows. Linear decay to zero and cosine decay are the other shapes (Li, Yumer and Ramanan,
"Budgeted Training", ICLR 2020, found linear decay robust when the length is fixed in advance).
"""

import math
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

    def factor(self, iteration: int, progress: float | None = None, warmup_iters: int | None = None) -> float:
        """Multiplier of base_lr at `iteration` (0-based).

        progress: the share of the run done, for a run fitted to a time budget (the share of its
        training time, `engine.budget`); by default the phases are counted in iterations.
        warmup_iters: the warm-up's length (default: its fraction of `total`).
        """
        if progress is None:
            passed = sum(iteration >= step for step in self.steps)
            progress = min(iteration / max(self.total, 1), 1.0)
        else:
            passed = sum(progress >= drop for drop in self.drops)
        if self.shape == "step":
            factor = self.gamma**passed
        else:
            factor = 1 - progress if self.shape == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
        warmup = self.warmup_iters if warmup_iters is None else warmup_iters
        if iteration < warmup:
            ramp = iteration / warmup
            factor *= self.warmup_factor * (1 - ramp) + ramp
        return factor

    def describe(self) -> str:
        warmup = f"warm-up {self.warmup_iters}"
        if self.shape == "step":
            return f"{self.total} iterations ({warmup}, drops at {', '.join(map(str, self.steps)) or 'none'})"
        return f"{self.total} iterations ({warmup}, {self.shape} decay to zero)"
