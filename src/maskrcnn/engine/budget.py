"""A run fitted to a time budget: the share of the training time spent drives the schedule.

Under `solver.budget_minutes` the whole command (set-up, training, the final checkpoint and
evaluation) must end within the budget and use it, on a machine whose load changes while the
run goes (a browser, a build, a second job). Three estimates make that hold:

- the step time (`StepTime`): a median over the last steps, once the first steps and the first
  step of each new batch shape (allocations, kernel choice) are past, so that one slow step (a
  checkpoint, a garbage collection) or a short slow spell barely moves it;
- the end's cost (`EndCost`): the final evaluation's inference re-timed on a few validation
  images as the run goes (an untrained model's many detections make it slow at first, and the
  load changes), counted in step times, so that a load that slows both is not counted twice;
- the training time left: the budget less what was spent, the end, the periodic evaluations
  still to come and a margin.

The schedule's phases are shares of the training time, not of an iteration count guessed in
advance: a drop planned at 77.5 % of the run falls when 77.5 % of the training time is spent,
however many iterations that took. A slow spell costs the run the time it lasted and nothing
more, a pessimistic early estimate cannot pull the drops forward, and a new estimate of the
end can only stretch the phase the run is in (the share spent never goes back) or shorten the
phases to come in their planned proportions. The warm-up stays a count of iterations (it is
there for the first updates of fresh weights): a share of the first fitted length, frozen once
it is over.
"""

import math
import os
import statistics
import time
from collections import deque
from collections.abc import Callable, Hashable
from pathlib import Path

from maskrcnn.engine.schedule import Schedule

# The end's inference is the estimate times this; scoring and plots add a part of their own
# (the shapes model on an AVX2 EPYC: 100 images, 2,456 detections scored in 0.35 s, the two
# plots 1.0 s; the confusion matrix and the two-panel curves add about as much).
INFERENCE_SAFETY = 1.1
SCORING_SECONDS = 2.5
SCORING_SECONDS_PER_IMAGE = 0.005
# A checkpoint not yet timed is guessed at this rate from the bytes it holds.
UNTIMED_SAVE_BYTES_PER_SECOND = 100e6
MARGIN = 0.01  # of the budget, kept free after the end's estimate
# The end is re-timed every 5 % of the budget; when a timing costs more than 1 % of that
# wait, less often, unless the end's estimate is so large that a timing is cheap beside it.
RETIME_EVERY = 0.05
RETIME_COST_SHARE = 0.01
RETIME_CHEAP = 0.05  # of the end's estimate
# Image timings made while the step time stays within this factor are pooled, up to
# POOL_IMAGES of them; each timing's first image is left out (it follows a training step and
# pays for the switch: caches, allocations).
LOAD_CHANGE = 1.3
POOL_IMAGES = 12
OUTLIER = 10.0  # an image counts at most this many times the pool's median image
# A new plan is said in the log when the predicted length moved by more than this share
# for REPLAN_STEPS steps in a row (not on the step a median passes between two values).
REPLAN_CHANGE = 0.15
REPLAN_STEPS = 10
# solver.eval_period "auto": evaluations take about this share of the training time, and
# are dropped (the final one alone) when fewer than MIN_EVALUATIONS would fit.
EVALUATION_SHARE = 0.1
MIN_EVALUATIONS = 3


class StepTime:
    """The typical wall time of a training step, robust to slow steps and slow spells.

    The first `skip` steps and the first step of each batch shape are not counted (they
    allocate and choose kernels); the estimate is the median of the last `window` counted steps.
    """

    def __init__(self, skip: int = 3, window: int = 50, settle: int = 3):
        self.skip, self.settle = skip, settle
        self.seen = 0
        self.shapes: set[Hashable] = set()
        self.times: deque[float] = deque(maxlen=window)

    def record(self, seconds: float, shape: Hashable | None = None) -> None:
        self.seen += 1
        first_of_shape = shape is not None and shape not in self.shapes
        self.shapes.add(shape)
        if self.seen > self.skip and not first_of_shape:
            self.times.append(seconds)

    @property
    def ready(self) -> bool:
        return len(self.times) >= self.settle

    def typical(self) -> float:
        return statistics.median(self.times)

    def recent(self, count: int = 5) -> float:
        """The median of the last `count` counted steps: the machine's pace right now."""
        return statistics.median(list(self.times)[-count:])


class EndCost:
    """Seconds the end of a run takes: the final checkpoint (written twice: last.pt and the
    model alone), inference on this process's share of the validation images, COCO scoring
    and the plots.

    The inference is timed on a few images at a time as the run goes. Each image's seconds
    are kept as a multiple of the step time at that moment (so that when the machine's load
    changes the estimate follows the steps without a new timing), pooled over the timings
    made under the same load: under load single images vary 6x, and three of them alone
    misjudge the end by 2x. A change of the step time by LOAD_CHANGE starts a new pool.
    The estimate is the pool's mean (the end costs the images' sum, not their median).
    """

    def __init__(self, images: int, checkpoint_bytes: int = 0):
        self.images = images
        self.per_image: float | None = None  # seconds, at the last timing
        self.ratios: deque[float] = deque(maxlen=POOL_IMAGES)  # image seconds / step seconds
        self.pool_step: float | None = None  # the step time the pooled timings were made at
        # until a checkpoint is timed: a guess from its size
        self.save_seconds = 0.1 + checkpoint_bytes / UNTIMED_SAVE_BYTES_PER_SECOND

    @property
    def in_steps(self) -> float | None:
        """An image's inference in step times: the pool's mean (the end costs the sum of
        its images, and a few slow ones among many fast ones are part of that sum), each image
        counted at most OUTLIER times the median one (a garbage collection, a page fault)."""
        if not self.ratios:
            return None
        cap = OUTLIER * statistics.median(self.ratios)
        return sum(min(ratio, cap) for ratio in self.ratios) / len(self.ratios)

    def timed(self, per_image: list[float], step_seconds: float | None) -> None:
        """Images timed now (seconds each) while steps took `step_seconds` (None: not known)."""
        if not per_image:
            return
        self.per_image = sum(per_image) / len(per_image)
        if not step_seconds:
            self.ratios.clear()
            self.pool_step = None
            return
        pooled = self.pool_step
        if pooled is None or max(step_seconds, pooled) > LOAD_CHANGE * min(step_seconds, pooled):
            self.ratios.clear()
            self.pool_step = step_seconds
        self.ratios.extend(seconds / step_seconds for seconds in per_image)

    def saved(self, seconds: float) -> None:
        """A checkpoint was written in `seconds`."""
        self.save_seconds = seconds

    def inference_seconds(self, step_seconds: float | None) -> float:
        """The validation split's inference and scoring (also a periodic evaluation's cost)."""
        if self.images == 0:
            return 0.0
        in_steps = self.in_steps
        if in_steps is not None and step_seconds:
            per_image = in_steps * step_seconds
        else:
            per_image = self.per_image or 0.0
        scoring = SCORING_SECONDS + SCORING_SECONDS_PER_IMAGE * self.images
        return INFERENCE_SAFETY * per_image * self.images + scoring

    def seconds(self, step_seconds: float | None) -> float:
        return self.inference_seconds(step_seconds) + 2 * self.save_seconds


class Budget:
    """Decides, after every step of a budgeted run, the learning-rate factor and whether to go on.

    seconds: the budget; clock: seconds, monotonic (time.monotonic); started: clock() when this
    process's share of the budget began; schedule: the config's shape (warm-up and drops as
    fractions); end: the end's cost; time_images: runs an evaluation's work on a few
    validation images and returns each one's seconds (None without a validation split);
    eval_period: a periodic evaluation every so many iterations (0: none), each costing the
    end's inference; choose_eval_period: choose it once the steps and the evaluation are
    timed, so that evaluations take EVALUATION_SHARE of the training time (0 when fewer than
    MIN_EVALUATIONS would fit).
    """

    def __init__(
        self,
        seconds: float,
        clock: Callable[[], float],
        started: float,
        schedule: Schedule,
        end: EndCost,
        time_images: Callable[[], list[float]] | None = None,
        eval_period: int = 0,
        step_time: StepTime | None = None,
        choose_eval_period: bool = False,
    ):
        self.seconds, self.clock, self.started = seconds, clock, started
        self.schedule, self.end, self.time_images = schedule, end, time_images
        self.eval_period = eval_period
        self.eval_period_chosen = not choose_eval_period  # False: still to choose
        self.step_time = step_time or StepTime()
        self.spent_before = 0.0  # budget used by an earlier run of a resumed one
        self.trained = 0.0  # seconds spent in training steps, earlier runs included
        self.progress = 0.0  # share of the training time spent; never goes back
        self.warmup_iters: int | None = None  # frozen once the warm-up is over
        self.next_timing = 0.0  # elapsed() at which the end is timed again
        self.timed_since_ready = False
        self.total = schedule.total  # the predicted length, for the progress bar and the log
        self.announced_total: int | None = None
        self.announced_at = 0.0
        self.announced_step: float | None = None
        self.announced_end: float | None = None
        self.changed_steps = 0  # steps in a row whose plan differs from the announced one

    # -- state carried by a checkpoint: a resumed run continues this fit --
    def state_dict(self) -> dict:
        return {
            "spent": self.elapsed(),
            "trained": self.trained,
            "progress": self.progress,
            "warmup_iters": self.warmup_iters,
            "total": self.total,
            "eval_period": self.eval_period if self.eval_period_chosen else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.spent_before = float(state["spent"])
        self.trained = float(state.get("trained", 0.0))
        self.progress = float(state.get("progress", 0.0))
        warmup = state.get("warmup_iters")
        self.warmup_iters = None if warmup is None else int(warmup)
        self.total = int(state.get("total", self.total))
        if state.get("eval_period") is not None and not self.eval_period_chosen:
            self.eval_period, self.eval_period_chosen = int(state["eval_period"]), True

    def elapsed(self) -> float:
        """Seconds of the budget used so far, earlier runs of a resumed one included."""
        return self.spent_before + self.clock() - self.started

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    def _step_seconds(self) -> float | None:
        return self.step_time.typical() if self.step_time.ready else None

    def end_seconds(self) -> float:
        return self.end.seconds(self._step_seconds())

    def training_left(self) -> float:
        """Seconds of training still to come: what remains of the budget less the end, a
        margin, and the periodic evaluations that fall into the rest."""
        left = self.remaining() - self.end_seconds() - MARGIN * self.seconds
        step = self._step_seconds()
        if self.eval_period and step:
            # N more steps cost N * step + (N / eval_period) * evaluation
            evaluation = self.end.inference_seconds(step)
            left *= step / (step + evaluation / self.eval_period)
        return max(left, 0.0)

    def time_end(self) -> None:
        """Time the end's work on a few validation images now and add them to the end's
        estimate (the first image of a timing pays for the switch from training and is left
        out)."""
        if self.time_images is None:
            return
        began = self.clock()
        seconds = self.time_images()
        cost = self.clock() - began
        # the pace of the last steps: the end in step times is measured at it, and a timing
        # is judged cheap beside the end at it too (when a load has just begun, the median
        # step, and the end in step times, still lag behind it)
        pace = self.step_time.recent() if self.step_time.ready else None
        if seconds:
            self.end.timed(seconds[1:] if len(seconds) > 1 else seconds, pace)
        wait = RETIME_EVERY * self.seconds
        if cost > RETIME_CHEAP * max(self.end_seconds(), self.end.seconds(pace)):
            wait = max(wait, cost / RETIME_COST_SHARE)
        self.next_timing = self.elapsed() + wait

    def after_step(self, iteration: int, seconds: float, shape: Hashable | None = None) -> None:
        """Count a finished step (`iteration` steps done, this one took `seconds`)."""
        self.trained += seconds
        self.step_time.record(seconds, shape)
        if not self.step_time.ready:
            return
        # The first timing after the steps settle gives the end in step times.
        if not self.timed_since_ready or self.elapsed() >= self.next_timing:
            self.timed_since_ready = True
            self.time_end()
        if not self.eval_period_chosen:
            self._choose_eval_period()
        left = self.training_left()
        self.progress = max(self.progress, self.trained / max(self.trained + left, 1e-9))
        self.total = iteration + int(left // self.step_time.typical())
        if self.warmup_iters is None and iteration >= self.schedule.with_total(self.total).warmup_iters:
            self.warmup_iters = iteration

    def _choose_eval_period(self) -> None:
        """Every P steps an evaluation of cost E: E / (P * step + E) = EVALUATION_SHARE."""
        self.eval_period_chosen = True
        step = self.step_time.typical()
        evaluation = self.end.inference_seconds(step)
        if evaluation <= 0:
            return
        period = math.ceil(evaluation * (1 - EVALUATION_SHARE) / (EVALUATION_SHARE * step))
        self.eval_period = period
        steps = self.training_left() / step  # with evaluations every `period` steps
        if steps / period < MIN_EVALUATIONS:
            self.eval_period = 0

    def finished(self) -> bool:
        """True when the next step would end after the time left for training (a step as
        slow as the typical one, or as the last few when the machine has just slowed down)."""
        if not self.step_time.ready:
            return self.training_left() <= 0
        return self.training_left() < max(self.step_time.typical(), self.step_time.recent())

    def factor(self, iteration: int) -> float:
        """The learning-rate multiplier of the step after `iteration` steps."""
        schedule = self.schedule.with_total(self.total)
        warmup = self.warmup_iters if self.warmup_iters is not None else schedule.warmup_iters
        return schedule.factor(iteration, progress=self.progress, warmup_iters=warmup)

    # -- what the log says --
    def plan_message(self, budget_minutes: float) -> str | None:
        """One line when the plan is first made, and when it changed by more than
        REPLAN_CHANGE (with the reason), at most once per RETIME_EVERY of the budget."""
        if not self.step_time.ready:
            return None
        step, end = self.step_time.typical(), self.end_seconds()
        if self.announced_total is None:
            self._announce(step, end)
            schedule = self.schedule.with_total(self.total)
            evaluations = f", an evaluation every {self.eval_period} iterations" if self.eval_period else ""
            return (
                f"budget {budget_minutes:g} min: about {self._plan(schedule)} at {step:.2f} s per step"
                f"{evaluations}, {end:.0f} s kept for the end (checkpoint and final evaluation, "
                "re-timed as the run goes)"
            )
        change = abs(self.total - self.announced_total) / max(self.announced_total, 1)
        self.changed_steps = self.changed_steps + 1 if change > REPLAN_CHANGE else 0
        recently = self.elapsed() - self.announced_at < RETIME_EVERY * self.seconds
        if self.changed_steps < REPLAN_STEPS or recently:
            return None
        reasons = []
        if abs(step - self.announced_step) > 0.1 * self.announced_step:
            reasons.append(f"steps take {step:.2f} s, not {self.announced_step:.2f} s")
        if abs(end - self.announced_end) > max(0.1 * self.announced_end, 0.01 * self.seconds):
            reasons.append(f"the end takes ~{end:.0f} s, not {self.announced_end:.0f} s")
        reason = "; ".join(reasons) or "the time spent differs from the plan"
        before = self.announced_total
        self._announce(step, end)
        return (
            f"budget: about {self.total} iterations now, not {before} ({reason}); "
            f"{100 * self.progress:.0f} % of the training time spent"
        )

    def _announce(self, step: float, end: float) -> None:
        self.changed_steps = 0
        self.announced_total, self.announced_at = self.total, self.elapsed()
        self.announced_step, self.announced_end = step, end

    def _plan(self, schedule: Schedule) -> str:
        warmup = self.warmup_iters if self.warmup_iters is not None else schedule.warmup_iters
        plan = f"{schedule.total} iterations (warm-up {warmup}"
        if schedule.shape == "step" and schedule.drops:
            shares = " and ".join(f"{100 * d:g} %" for d in schedule.drops)
            plan += f", drops at {shares} of the training time: about iterations "
            plan += ", ".join(str(s) for s in schedule.steps)
        elif schedule.shape != "step":
            plan += f", {schedule.shape} decay to zero over the training time"
        return plan + ")"


def process_seconds() -> float:
    """How long this process has run, so that a budget also covers importing torch and
    reading the command line (about 5 s of a 10-minute budget); 0 where the system does not
    say (Linux's /proc gives the start in clock ticks since boot)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_since_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        running = time.clock_gettime(time.CLOCK_BOOTTIME) - started_since_boot
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0
    return running if 0 <= running < 86_400 else 0.0


def end_images(validation_size: int, world_size: int) -> int:
    """This process's share of the validation images (each process predicts its share)."""
    return math.ceil(validation_size / world_size) if validation_size else 0
