"""The learning-rate schedule of the paper: linear warm-up, then steps down by gamma."""

import bisect

from maskrcnn.config import SolverConfig


def learning_rate_factor(iteration: int, solver: SolverConfig) -> float:
    """Multiplier of base_lr at `iteration` (0-based)."""
    factor = solver.gamma ** bisect.bisect_right(sorted(solver.steps), iteration)
    if iteration < solver.warmup_iters:
        progress = iteration / solver.warmup_iters
        factor *= solver.warmup_factor * (1 - progress) + progress
    return factor
