"""The learning-rate schedule's shape under a short run: step, linear and cosine on shapes.

Trains configs/shapes.yaml with each `solver.schedule` and each seed for the same number of
iterations (the schedule is written as fractions of the run, so a time budget is a choice of
that number) and prints a Markdown table of the final box and mask AP (COCO AP on the
validation split, in %): mean and spread over the seeds, and each run.

    python benchmarks/schedules.py --iterations 800 --seeds 0 1 2

Runs one at a time (each uses every core); writes into runs/schedules/ and resumes nothing:
each run starts from scratch.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=800)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--schedules", nargs="+", default=["step", "linear", "cosine"])
    parser.add_argument("--data", default="data/shapes")
    parser.add_argument("--out", default="runs/schedules")
    args = parser.parse_args()
    data = Path(args.data)
    if not (data / "annotations" / "instances_val.json").exists():
        subprocess.run([sys.executable, "-m", "maskrcnn", "make-shapes", str(data)], check=True)
    runs = {}
    for seed in args.seeds:  # seeds outermost: a slow spell of the machine hits every shape
        for schedule in args.schedules:
            out = Path(args.out) / f"{schedule}_seed{seed}"
            command = [
                sys.executable, "-m", "maskrcnn", "train", str(ROOT / "configs" / "shapes.yaml"),
                "--train-json", str(data / "annotations" / "instances_train.json"),
                "--train-images", str(data / "train"),
                "--val-json", str(data / "annotations" / "instances_val.json"),
                "--val-images", str(data / "val"),
                "--out", str(out), "--overwrite", "--max-iter", str(args.iterations),
                f"solver.schedule={schedule}", f"seed={seed}", "solver.eval_period=0",
            ]  # fmt: skip
            started = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            metrics = json.loads((out / "metrics.json").read_text())
            runs[schedule, seed] = (metrics["bbox"]["AP"] * 100, metrics["segm"]["AP"] * 100)
            minutes = (time.perf_counter() - started) / 60
            print(f"{schedule} seed {seed}: box AP {runs[schedule, seed][0]:.1f}, "
                  f"mask AP {runs[schedule, seed][1]:.1f} ({minutes:.1f} min)", flush=True)  # fmt: skip
    print(f"\n{args.iterations} iterations, seeds {', '.join(map(str, args.seeds))}\n")
    print("| schedule | mask AP mean (min-max) | box AP mean (min-max) | mask AP per seed |")
    print("|---|---|---|---|")
    for schedule in args.schedules:
        box = [runs[schedule, s][0] for s in args.seeds]
        mask = [runs[schedule, s][1] for s in args.seeds]
        print(
            f"| {schedule} | {statistics.mean(mask):.1f} ({min(mask):.1f}-{max(mask):.1f}) "
            f"| {statistics.mean(box):.1f} ({min(box):.1f}-{max(box):.1f}) "
            f"| {' / '.join(f'{m:.1f}' for m in mask)} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
