"""The fit of a run to a time budget, driven by a stubbed clock: what the trainer calls after
every step (`Budget.after_step`, `finished`, `factor`), with steps, end timings and slow
spells that take the time the test says."""

import pytest

from maskrcnn.config import SolverConfig
from maskrcnn.engine import budget as budget_module
from maskrcnn.engine.budget import Budget, EndCost, StepTime
from maskrcnn.engine.schedule import Schedule

BUDGET = 600.0
IMAGES = 100  # validation images
SAVE = 0.5  # seconds per checkpoint
SCORING = 1.0  # the real scoring and plots


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def simulate(
    step_seconds,
    image_seconds,
    setup=5.0,
    shape=lambda i: (4, 7, 9),
    slow_first=1.0,
    spread=(1.0,),
    by_time=False,
):
    """A budgeted run: step_seconds(i) is the wall time of step i (1-based); image_seconds(t)
    the validation inference per image at t seconds into the budget. Returns the iterations,
    the seconds of the budget at the last step's end, the end's real cost, and the
    learning-rate factor of each step. slow_first: the first image of each timing takes this
    many times the others (the final evaluation's images do not); spread: each image's
    multiple of image_seconds, in turn (the end's images cost their mean); by_time: step_seconds
    is given the seconds into the budget instead of the step's number."""
    clock = Clock()
    started = clock.now
    schedule = Schedule.from_solver(SolverConfig(max_iter=2000, warmup_iters=100, steps=(1550, 1850)))
    end = EndCost(IMAGES)

    next_image = iter(range(10**9))

    def time_images():
        seconds = image_seconds(clock.now - started)
        times = [seconds * spread[next(next_image) % len(spread)] for _ in range(4)]
        times[0] *= slow_first
        clock.now += sum(times)
        return times

    budget = Budget(BUDGET, clock, started, schedule, end, time_images)
    clock.now += setup
    budget.time_end()
    iteration, factors, saved = 0, [], False
    while not budget.finished():
        factors.append(budget.factor(iteration))
        seconds = step_seconds(clock.now - started) if by_time else step_seconds(iteration + 1)
        clock.now += seconds
        iteration += 1
        budget.after_step(iteration, seconds, shape(iteration))
        if iteration == 500 and not saved:  # a periodic checkpoint
            clock.now += SAVE
            end.saved(SAVE)
            saved = True
        assert iteration < 100_000
    last_step_end = clock.now - started
    real_end = IMAGES * image_seconds(last_step_end) * sum(spread) / len(spread) + SCORING + 2 * SAVE
    return iteration, last_step_end, real_end, factors


def phase_lengths(factors):
    """Iterations at each learning-rate level after the warm-up: (1, 0.1, 0.01)."""
    return [sum(1 for f in factors if f == pytest.approx(level)) for level in (1.0, 0.1, 0.01)]


def assert_uses_the_budget(last_step_end, real_end, at_least=0.95):
    assert last_step_end + real_end <= 1.03 * BUDGET
    # the last step ends no earlier than the budget less the real end and 5 % of the budget
    assert last_step_end >= BUDGET - real_end - (1 - at_least) * BUDGET


def assert_phases_keep_their_proportions(factors, at_least=0.5):
    # after the warm-up the rate only ever falls: no phase is left and entered again
    top = factors.index(max(factors))
    assert all(a >= b for a, b in zip(factors[top:], factors[top + 1 :]))
    total = len(factors)
    planned = [0.775 * total - 0.05 * total, 0.15 * total, 0.075 * total]
    for got, want in zip(phase_lengths(factors), planned):
        assert got >= at_least * want, (phase_lengths(factors), planned)


def test_an_idle_machine_uses_its_budget_and_the_recipes_phases():
    iterations, last, real_end, factors = simulate(lambda i: 0.15, lambda t: 0.05)
    assert_uses_the_budget(last, real_end)
    # 600 s less 5 s of set-up, the timings and ~10 s of end: about 3,900 steps of 0.15 s
    assert 3800 <= iterations <= 3960
    assert_phases_keep_their_proportions(factors, at_least=0.95)


def test_the_end_is_re_timed_as_an_untrained_models_slow_evaluation_gets_faster():
    # An untrained model's evaluation: 2 s per image, falling to 0.05 s by a fifth of the run
    falling = lambda t: max(0.05, 2.0 * (1 - t / 120))  # noqa: E731
    iterations, last, real_end, factors = simulate(lambda i: 0.15, falling)
    assert_uses_the_budget(last, real_end)
    steady, *_ = simulate(lambda i: 0.15, lambda t: 0.05)
    # shorter only by the timings' own seconds: four images of up to 2 s each, every 30 s
    # while the model is slow (about 25 s in all, 160 steps)
    assert iterations >= 0.96 * steady


def test_a_slow_first_image_in_each_timing_does_not_inflate_the_end():
    # 0.5 s per validation image (a 50 s end), the first image of each timing 4x that
    steady, *_ = simulate(lambda i: 0.15, lambda t: 0.5)
    iterations, last, real_end, factors = simulate(lambda i: 0.15, lambda t: 0.5, slow_first=4.0)
    assert_uses_the_budget(last, real_end)
    assert iterations >= steady - 15  # only the timings' own extra seconds


def test_images_that_vary_five_fold_under_a_load_to_the_end_neither_overrun_nor_waste_it():
    # From the middle of the run to its end a load slows steps 3x and inference 7x, and
    # single images vary 10x, most of them fast (as on a 2-core EPYC under two busy loops, where
    # the median image is well below the mean)
    loaded = lambda t: 0.56 if t > 300 else 0.08  # noqa: E731
    step = lambda t: 0.45 if t > 300 else 0.15  # noqa: E731
    spread = (0.3, 0.3, 3.0, 0.3, 0.3, 0.3, 0.3, 2.5, 0.3, 0.3, 0.3, 0.3)
    mean = sum(spread) / len(spread)
    spread = tuple(s / mean for s in spread)
    iterations, last, real_end, factors = simulate(step, loaded, spread=spread, by_time=True)
    assert last + real_end <= 1.03 * BUDGET
    assert last + real_end >= 0.93 * BUDGET


def test_a_loaded_start_neither_wastes_the_budget_nor_pulls_the_drops_forward():
    # The first minute loaded: 5 s steps and 1.6 s per validation image, then 0.15 s and 0.05 s
    clock_of_step = {}

    def step_seconds(i):
        before = sum(clock_of_step.values())
        clock_of_step[i] = 5.0 if before < 60 else 0.15
        return clock_of_step[i]

    loaded_end = lambda t: 1.6 if t < 65 else 0.05  # noqa: E731
    iterations, last, real_end, factors = simulate(step_seconds, loaded_end)
    assert_uses_the_budget(last, real_end)
    assert_phases_keep_their_proportions(factors, at_least=0.9)


def test_a_slow_spell_late_in_the_run_costs_only_its_own_time():
    steady, steady_last, real_end, _ = simulate(lambda i: 0.15, lambda t: 0.05)
    spell = range(3000, 3020)  # 20 steps at 3x the rate, in the last phases
    slow = lambda i: 0.45 if i in spell else 0.15  # noqa: E731
    iterations, last, real_end, factors = simulate(slow, lambda t: 0.05)
    assert_uses_the_budget(last, real_end, at_least=0.90)
    assert_phases_keep_their_proportions(factors)
    # the spell cost 20 * 0.3 s = 40 steps' time; the run is shorter by about that, no more
    assert steady - 40 - 3 <= iterations <= steady - 40 + 3


def test_one_long_step_shortens_the_run_by_its_own_cost_only():
    steady, *_ = simulate(lambda i: 0.15, lambda t: 0.05)
    iterations, last, real_end, factors = simulate(lambda i: 30.0 if i == 1000 else 0.15, lambda t: 0.05)
    assert_uses_the_budget(last, real_end)
    assert iterations >= steady - round(30 / 0.15) - 3


def test_after_a_spell_the_fit_recovers():
    clock = Clock()
    schedule = Schedule.from_solver(SolverConfig(max_iter=2000, warmup_iters=100, steps=(1550, 1850)))
    budget = Budget(BUDGET, clock, clock.now, schedule, EndCost(0))
    totals = []
    for iteration in range(1, 400):
        seconds = 0.6 if 100 <= iteration < 200 else 0.15
        clock.now += seconds
        budget.after_step(iteration, seconds)
        totals.append(budget.total)
    # 100 slow steps fit a run a quarter as long; 100 fast ones after them restore the fit
    assert totals[190] < 0.5 * totals[90]
    assert totals[-1] >= totals[90] - 100 * 0.45 / 0.15 - 5


def test_the_step_time_skips_warm_up_steps_and_each_new_shapes_first_step():
    times = StepTime(skip=2, window=5, settle=3)
    for seconds, shape in [(9, "a"), (9, "a"), (1, "a"), (4, "b"), (1, "a"), (1, "b")]:
        times.record(seconds, shape)
    assert list(times.times) == [1, 1, 1] and times.ready
    times.record(30, "a")  # one outlier (a garbage collection)
    assert times.typical() == 1
    for _ in range(5):
        times.record(2, "a")
    assert times.typical() == 2  # the window follows a lasting change


def test_the_plan_is_said_once_and_again_only_when_it_changes_with_the_reason():
    clock = Clock()
    schedule = Schedule.from_solver(SolverConfig(max_iter=2000, warmup_iters=100, steps=(1550, 1850)))
    budget = Budget(BUDGET, clock, clock.now, schedule, EndCost(0))
    messages = []
    for iteration in range(1, 1200):
        seconds = 0.3 if iteration > 600 else 0.15
        clock.now += seconds
        budget.after_step(iteration, seconds)
        messages.append(budget.plan_message(10))
    said = [m for m in messages if m]
    assert len(said) == 2, said
    assert said[0].startswith("budget 10 min: about ") and "77.5 %" in said[0]
    assert "steps take 0.30 s, not 0.15 s" in said[1]


def test_a_resumed_budget_continues_the_spent_time_and_the_share_of_training():
    clock = Clock()
    schedule = Schedule.from_solver(SolverConfig(max_iter=2000, warmup_iters=100, steps=(1550, 1850)))
    first = Budget(BUDGET, clock, clock.now, schedule, EndCost(0))
    for iteration in range(1, 1001):
        clock.now += 0.3
        first.after_step(iteration, 0.3)
    state = first.state_dict()
    second = Budget(BUDGET, clock, clock.now, schedule, EndCost(0))
    second.load_state_dict(state)
    assert second.elapsed() == pytest.approx(300.0) and second.progress == first.progress
    assert second.factor(1000) == first.factor(1000)


def test_one_image_far_slower_than_all_others_counts_at_most_ten_median_images():
    end = EndCost(500)
    end.timed([0.2, 0.2, 0.2, 0.2, 0.2], step_seconds=1.0)
    end.timed([9.0], step_seconds=1.0)  # a page fault in one image: 45 median ones
    # the pool's mean with the slow image counted as 10 median ones: 0.2 * 15 / 6
    assert end.in_steps == pytest.approx(0.5)
    end.timed([1.0, 0.9, 1.1], step_seconds=1.0)  # slower images, three of them: all counted
    assert end.in_steps == pytest.approx((5 * 0.2 + 2.0 + 3.0) / 9)


def test_the_end_follows_the_step_time_when_the_load_changes():
    end = EndCost(100)
    end.timed(per_image=[0.5, 0.5, 0.5], step_seconds=1.0)  # timed under load: steps of 1 s
    loaded = end.inference_seconds(1.0)
    idle = end.inference_seconds(0.1)  # the load is gone: steps of 0.1 s
    assert idle < 0.2 * loaded
    scoring = budget_module.SCORING_SECONDS + budget_module.SCORING_SECONDS_PER_IMAGE * 100
    assert idle == pytest.approx(budget_module.INFERENCE_SAFETY * 0.05 * 100 + scoring)


def test_a_long_slow_spell_just_before_the_drops_does_not_squeeze_the_phases_after_them():
    # From 60 % of the budget, a minute of steps at 4x (ending before the first drop): a fit
    # by iterations would shrink the run below its planned drops and run them in a few
    # iterations at the end
    elapsed = [0.0]

    def step_seconds(i):
        seconds = 0.6 if 0.60 * BUDGET <= elapsed[0] < 0.60 * BUDGET + 60 else 0.15
        elapsed[0] += seconds
        return seconds

    iterations, last, real_end, factors = simulate(step_seconds, lambda t: 0.05)
    assert_uses_the_budget(last, real_end)
    assert_phases_keep_their_proportions(factors, at_least=0.9)
    # the phases hold their shares of the training time: in iterations, the slow minute
    # took 300 steps' time from the first phase, and the later ones keep their length
    ones, tenths, hundredths = phase_lengths(factors)
    assert tenths >= 0.9 * 0.15 * (BUDGET - 20) / 0.15 and hundredths >= 0.9 * 0.075 * (BUDGET - 20) / 0.15


def test_the_budget_counts_the_process_from_its_start():
    import subprocess
    import sys

    # a process that sleeps 1.5 s before asking: the answer covers that time
    code = "import time; time.sleep(1.5); from maskrcnn.engine import budget; print(budget.process_seconds())"
    seconds = float(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert 1.5 <= seconds < 60
