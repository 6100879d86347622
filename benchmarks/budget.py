"""`maskrcnn train --budget-minutes M` on three data sets, idle and under a competing load.

For each data set, three runs of the command a user types (set-up, training, the final
checkpoint and evaluation all inside M minutes):
- idle: nothing else runs;
- loaded start: a CPU-bound competitor (one busy loop per core) during the first minute;
- loaded from half: the same competitor started at M/2, running until the command ends.
Prints, per run: the command's wall time, the share of the budget used, iterations, the end's
real and estimated cost, and box/mask AP on the validation split.

Data sets: `shapes` (the project's generator, 1000/100 images), `blobs` (this file's own
generator: ellipses, five-pointed stars and rings on a noisy textured background, 192 px, 1-5
objects of 12-48 px radius, 1000/100 images), and `shapes50` (the project's generator, 50
training images, 100 validation images).

    python benchmarks/budget.py --minutes 10 [--sets shapes,blobs,shapes50] [--conditions idle,start,half]
"""

import argparse
import json
import math
import multiprocessing
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from pycocotools import mask as mask_utils

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "shapes.yaml"
BLOB_CLASSES = ("ellipse", "star", "ring")


def _blob(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, angle: float, fill) -> None:
    if kind == "ellipse":
        draw.ellipse([cx - r, cy - 0.6 * r, cx + r, cy + 0.6 * r], fill=fill)
    elif kind == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else 0.45 * r
            theta = angle + k * math.pi / 5
            points.append((cx + radius * math.cos(theta), cy + radius * math.sin(theta)))
        draw.polygon(points, fill=fill)
    else:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        draw.ellipse([cx - 0.5 * r, cy - 0.5 * r, cx + 0.5 * r, cy + 0.5 * r], fill=0 if fill == 1 else None)


def make_blobs(out: Path, count: int, split: str, seed: int, size: int = 192) -> Path:
    """Images and a COCO JSON of blobs; later objects occlude earlier ones."""
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    (out / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, count + 1):
        background = noise.normal(110, 25, (size // 8, size // 8, 3)).clip(0, 255).astype(np.uint8)
        picture = (
            Image.fromarray(background)
            .resize((size, size), Image.BICUBIC)
            .filter(ImageFilter.GaussianBlur(2))
        )
        draw = ImageDraw.Draw(picture)
        masks = []
        for _ in range(rng.randint(1, 5)):
            kind = rng.choice(BLOB_CLASSES)
            r = rng.uniform(12, 48)
            cx, cy = rng.uniform(r * 0.5, size - r * 0.5), rng.uniform(r * 0.5, size - r * 0.5)
            angle = rng.uniform(0, 2 * math.pi)
            colour = tuple(rng.randint(0, 255) for _ in range(3))
            layer = Image.new("L", (size, size), 0)
            _blob(ImageDraw.Draw(layer), kind, cx, cy, r, angle, 1)
            mask = np.array(layer, dtype=bool)
            for earlier in masks:
                earlier[1][mask] = False
            masks.append((kind, mask))
            if kind == "ring":
                picture.paste(colour, mask=Image.fromarray(mask.astype(np.uint8) * 255))
            else:
                _blob(draw, kind, cx, cy, r, angle, colour)
        pixels = np.asarray(picture).astype(np.int16) + noise.integers(-12, 13, (size, size, 3))
        name = f"{image_id:06d}.png"
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(out / split / name)
        images.append({"id": image_id, "file_name": name, "height": size, "width": size})
        for kind, mask in masks:
            if mask.sum() < 20:  # hidden by later objects
                continue
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": BLOB_CLASSES.index(kind) + 1,
                    "segmentation": rle,
                    "area": float(mask_utils.area(rle)),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(BLOB_CLASSES)]
    path = out / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def data_set(name: str, root: Path) -> Path:
    folder = root / name
    if (folder / "annotations" / "instances_val.json").exists():
        return folder
    if name == "blobs":
        make_blobs(folder, 1000, "train", seed=1)
        make_blobs(folder, 100, "val", seed=2)
    else:
        train = {"shapes": 1000, "shapes50": 50}[name]
        command = [sys.executable, "-m", "maskrcnn", "make-shapes", str(folder), "--train", str(train)]
        subprocess.run([*command, "--val", "100"], check=True)
    return folder


def _busy() -> None:
    while True:
        pass


class Competitor:
    """One busy loop per core, in processes of their own."""

    def __init__(self):
        self.processes = []

    def start(self) -> None:
        for _ in range(multiprocessing.cpu_count()):
            process = multiprocessing.Process(target=_busy, daemon=True)
            process.start()
            self.processes.append(process)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
            process.join()
        self.processes = []


def run(data: Path, out: Path, minutes: float, condition: str) -> dict:
    annotations = data / "annotations"
    command = [sys.executable, "-m", "maskrcnn", "train", str(CONFIG), "--out", str(out), "--overwrite"]
    command += ["--budget-minutes", f"{minutes:g}"]
    command += [
        f"data.train_json={annotations / 'instances_train.json'}",
        f"data.train_images={data / 'train'}",
    ]
    command += [f"data.val_json={annotations / 'instances_val.json'}", f"data.val_images={data / 'val'}"]
    competitor = Competitor()
    started = time.monotonic()
    log = open(out.with_suffix(".log"), "w")  # noqa: SIM115
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    load_from, load_until = {"idle": (None, None), "start": (0, 60), "half": (30 * minutes, math.inf)}[
        condition
    ]
    loaded = False
    while process.poll() is None:
        now = time.monotonic() - started
        if load_from is not None and not loaded and load_from <= now < load_until:
            competitor.start()
            loaded = True
        if loaded and now >= load_until:
            competitor.stop()
            load_from = None
            loaded = False
        time.sleep(0.2)
    competitor.stop()
    wall = time.monotonic() - started
    log.close()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed; see {out.with_suffix('.log')}")
    text = out.with_suffix(".log").read_text()
    end = re.search(
        r"(\d+) iterations; the end took (\d+) s \(estimated (\d+) s\); (\d+) of (\d+) s used", text
    )
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "wall": wall,
        "iterations": int(end.group(1)),
        "end": int(end.group(2)),
        "estimated": int(end.group(3)),
        "box": 100 * metrics["bbox"]["AP"],
        "mask": 100 * metrics["segm"]["AP"],
    }


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from timing import machine

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sets", default="shapes,blobs,shapes50")
    parser.add_argument("--conditions", default="idle,start,half")
    parser.add_argument("--data", default="data/budget")
    parser.add_argument("--out", default="runs/budget")
    args = parser.parse_args()
    rows = []
    for name in args.sets.split(","):
        data = data_set(name, Path(args.data))
        for condition in args.conditions.split(","):
            out = Path(args.out) / f"{name}-{condition}"
            out.parent.mkdir(parents=True, exist_ok=True)
            row = run(data, out, args.minutes, condition)
            rows.append((name, condition, row))
            print(name, condition, row, flush=True)
    print(f"\n# budget {args.minutes:g} min, configs/shapes.yaml, {machine()}")
    print(
        "| data | load | wall time (s) | of the budget | iterations | end: real / estimated (s) "
        "| box AP | mask AP |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, condition, row in rows:
        share = 100 * row["wall"] / (60 * args.minutes)
        print(
            f"| {name} | {condition} | {row['wall']:.0f} | {share:.1f} % | {row['iterations']} | "
            f"{row['end']} / {row['estimated']} | {row['box']:.1f} | {row['mask']:.1f} |"
        )


if __name__ == "__main__":
    main()
