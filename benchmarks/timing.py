"""Timing helpers shared by the benchmark scripts."""

import os
import platform
import statistics
import time
from pathlib import Path

import torch

from maskrcnn.precision import cpu_has_fast_bfloat16


def machine() -> str:
    """Date, CPU model, cores, vector instructions and torch build: what the figures depend on.

    (The same code ran float32 1.3-1.9x and bfloat16 10x apart on an AVX-512/AMX Xeon and
    an AVX2 EPYC, both with 2 cores.)
    """
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    bf16 = "yes" if cpu_has_fast_bfloat16() else "no"
    return (
        f"{time.strftime('%Y-%m-%d')}, {model} ({platform.machine()}, {os.cpu_count()} cores, "
        f"{torch.backends.cpu.get_cpu_capability()}, bfloat16 instructions: {bf16}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )


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
