"""Timing helpers shared by the benchmark scripts."""

import statistics
import time


def median_time(function, runs: int) -> float:
    """Median wall time of `runs` calls after one warm-up call (first-call allocations,
    kernel selection and weight caches are not what is being measured)."""
    function()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_medians(functions: dict, runs: int) -> dict[str, float]:
    """Median time of each function, run in turns (a, b, c, a, b, c, ...) so that a slow
    spell of a shared machine falls on all of them alike."""
    for function in functions.values():
        function()  # warm-up
    times = {name: [] for name in functions}
    for _ in range(runs):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
