"""How much of the step rate `maskrcnn train` keeps, and where the rest goes.

Runs `maskrcnn train configs/shapes.yaml` for --iterations with every short side at 208 px
(the 208x277 batches of 4 that `benchmarks/training.py` times), with DataLoader workers and
the image cache on and off, and prints each loop's mean iteration time (wall time of the
logged iterations after the first --skip, data wait included) beside the benchmark's step
time, measured in the same run:

    python benchmarks/loop_rate.py --iterations 150
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from end_to_end import CONFIG, data_overrides
from timing import machine, paired_medians
from training import shapes_models, step_function

import maskrcnn


def loop_time(data: Path, out: Path, iterations: int, skip: int, overrides: list[str]) -> tuple[float, float]:
    """Mean iteration time and mean data wait (s) of a training run's logged iterations (every
    fifth: the logging itself, between iterations, is left out)."""
    train_only = [o for o in data_overrides(data) if o.startswith("data.train_")]
    command = [sys.executable, "-m", "maskrcnn", "train", str(CONFIG), *train_only, "data.val_json=''"]
    command += ["--out", str(out), "--overwrite", "--max-iter", str(iterations), "data.min_sizes_train=[208]"]
    command += ["solver.log_period=5", "solver.checkpoint_period=100000", *overrides]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "time" in r and r["iteration"] > skip]
    return statistics.mean(r["time"] for r in steps), statistics.mean(r["data_time"] for r in steps)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--skip", type=int, default=20, help="first iterations left out (warm-up)")
    parser.add_argument("--data", default="data/shapes")
    parser.add_argument("--out", default="runs/loop_rate")
    parser.add_argument(
        "--weights",
        help="start both from this shapes model (e.g. runs/demo/model_final.pt): a trained model's step "
        "costs more than a fresh one's (more positive RoIs for the mask head, other proposals), so "
        "compare the loop and the step in the same state",
    )
    args = parser.parse_args()
    data = Path(args.data)
    ours, _, images, targets = shapes_models(("model.num_classes=4",))
    if args.weights:
        ours = maskrcnn.load_model(args.weights)
    step = paired_medians({"ours": step_function(ours, images, targets, ours=True)}, 10)["ours"]
    start = [f"init_weights={args.weights}"] if args.weights else []
    variants = {
        "1 worker, no cache": ["data.num_workers=1", "data.cache_images=false"],
        "1 worker, cache": ["data.num_workers=1", "data.cache_images=true"],
        "no worker, cache": ["data.num_workers=0", "data.cache_images=true"],
    }
    print(f"# training loop vs step, configs/shapes.yaml at 208 px, batch 4, {machine()}")
    state = f"from {args.weights}" if args.weights else "fresh model"
    print(f"benchmark step (loss + backward + SGD, median of 10, {state}): {step:.3f} s\n")
    print("| data loading | s/iteration | data wait (s) | share of the step rate |")
    print("|---|---:|---:|---:|")
    for name, overrides in variants.items():
        seconds, wait = loop_time(data, Path(args.out), args.iterations, args.skip, [*start, *overrides])
        print(f"| {name} | {seconds:.3f} | {wait:.3f} | {100 * step / seconds:.0f} % |", flush=True)
    print(f"\n(torch threads in the trainer: {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
