"""The README's "Training on your own data" run: LabelMe files in, a trained model and its
reports out, with the commands a user types.

1. Draws a LabelMe folder (this file's own generator: ellipses, five-pointed stars and
   triangles on a noisy textured background, 224 px, 1-6 objects of 14-44 px that do not
   overlap, each saved as a LabelMe polygon; 200 images).
2. `maskrcnn convert labelme DIR --out F.json --val-fraction 0.2` (160 training images, 40
   validation images).
3. `maskrcnn train shapes ... --budget-minutes M --patience 4`: periodic evaluations chosen
   by the budget, model_best.pt, results.csv, the two-panel curves, the confusion matrix.
4. `maskrcnn eval shapes --weights model_best.pt ... --metric accuracy`.
Copies loss_curves.png and confusion_matrix.png into docs/ and prints the figures.

    python benchmarks/own_data.py --minutes 5 --work /tmp/own_data
"""

import argparse
import json
import math
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("ellipse", "star", "triangle")


def outline(kind: str, cx: float, cy: float, r: float, angle: float) -> list[list[float]]:
    """The shape's polygon, as a person would click it in LabelMe."""
    if kind == "ellipse":
        steps = 24
        points = [
            (r * math.cos(2 * math.pi * k / steps), 0.6 * r * math.sin(2 * math.pi * k / steps))
            for k in range(steps)
        ]
    elif kind == "star":
        points = [
            (
                (r if k % 2 == 0 else 0.45 * r) * math.cos(k * math.pi / 5),
                (r if k % 2 == 0 else 0.45 * r) * math.sin(k * math.pi / 5),
            )
            for k in range(10)
        ]
    else:
        points = [(r * math.cos(2 * math.pi * k / 3), r * math.sin(2 * math.pi * k / 3)) for k in range(3)]
    cos, sin = math.cos(angle), math.sin(angle)
    return [[round(cx + x * cos - y * sin, 1), round(cy + x * sin + y * cos, 1)] for x, y in points]


def make_labelme(folder: Path, count: int, seed: int, size: int = 224) -> None:
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        background = noise.normal(120, 30, (size // 8, size // 8, 3)).clip(0, 255).astype(np.uint8)
        picture = (
            Image.fromarray(background)
            .resize((size, size), Image.BICUBIC)
            .filter(ImageFilter.GaussianBlur(2))
        )
        draw = ImageDraw.Draw(picture)
        placed, shapes = [], []
        for _ in range(rng.randint(1, 6)):
            r = rng.uniform(14, 44)
            cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
            if any(math.hypot(cx - x, cy - y) < r + other + 4 for x, y, other in placed):
                continue  # LabelMe polygons do not say which of two overlapping shapes is on top
            placed.append((cx, cy, r))
            kind = rng.choice(CLASSES)
            polygon = outline(kind, cx, cy, r, rng.uniform(0, 2 * math.pi))
            draw.polygon([tuple(p) for p in polygon], fill=tuple(rng.randint(0, 255) for _ in range(3)))
            shapes.append(
                {"label": kind, "points": polygon, "group_id": None, "shape_type": "polygon", "flags": {}}
            )
        pixels = np.asarray(picture).astype(np.int16) + noise.integers(-10, 11, (size, size, 3))
        name = f"img_{index:04d}.jpg"
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / name, quality=92)
        document = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": name,
                    "imageData": None, "imageHeight": size, "imageWidth": size}  # fmt: skip
        (folder / f"img_{index:04d}.json").write_text(json.dumps(document))


def command(*argv: str) -> tuple[float, str]:
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "maskrcnn", *argv], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"maskrcnn {' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")
    return time.monotonic() - began, done.stdout + done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/own_data"))
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from timing import machine

    labels, run = args.work / "labelme", args.work / "run"
    if not labels.exists():
        make_labelme(labels, 200, seed=7)
    data = args.work / "shapes.json"
    seconds, text = command("convert", "labelme", str(labels), "--out", str(data), "--val-fraction", "0.2")
    print(f"convert ({seconds:.1f} s): {text.strip()}")
    train, val = args.work / "shapes_train.json", args.work / "shapes_val.json"
    argv = [
        "train",
        "shapes",
        "--train-json",
        str(train),
        "--train-images",
        str(labels),
        "--val-json",
        str(val),
    ]
    argv += [
        "--val-images",
        str(labels),
        "--out",
        str(run),
        "--overwrite",
        "--budget-minutes",
        f"{args.minutes:g}",
    ]
    seconds, text = command(*argv, "--patience", "4")
    (args.work / "train.log").write_text(text)
    said = [line for line in text.splitlines() if line.startswith(("budget", "best", "stopped"))]
    print(f"train ({seconds:.0f} s of {60 * args.minutes:.0f}): " + " | ".join(said))
    metrics = json.loads((run / "metrics.json").read_text())
    box, mask = 100 * metrics["bbox"]["AP"], 100 * metrics["segm"]["AP"]
    print(f"final: box AP {box:.1f}, mask AP {mask:.1f}; best: {metrics.get('best')}")
    best = str(run / "model_best.pt")
    argv = ["eval", "shapes", "--weights", best, "--json", str(val), "--images", str(labels)]
    seconds, text = command(*argv, "--out", str(args.work / "eval"), "--metric", "accuracy")
    print(f"eval of model_best.pt ({seconds:.0f} s):\n{text.strip()}")
    args.docs.mkdir(exist_ok=True)
    for name in ("loss_curves.png", "confusion_matrix.png"):
        shutil.copyfile(run / name, args.docs / f"own_data_{name}")
    print(f"pictures: {args.docs}/own_data_loss_curves.png, own_data_confusion_matrix.png; {machine()}")


if __name__ == "__main__":
    main()
