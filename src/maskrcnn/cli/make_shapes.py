"""`maskrcnn make-shapes`: write the synthetic shapes dataset and say what was written.

Rerun into the same folder with fewer images, it removes the images of the earlier run that the
new annotation files no longer list (found through the earlier annotation files, so only images
this command wrote are ever removed): an image folder then holds what its annotations describe.
"""

import argparse
import json
from pathlib import Path

from maskrcnn.cli.checks import WholeNumber
from maskrcnn.path_checks import output_folder

# make-shapes writes about 100 kB and takes about 20 ms per image: 100000 is 10 GB and half an hour.
MAX_SHAPES_IMAGES = 100_000


def add(subcommands) -> argparse.ArgumentParser:
    parser = subcommands.add_parser(
        "make-shapes",
        help="write the synthetic shapes dataset (COCO format)",
        description=(
            "Write the built-in synthetic dataset (circles, squares and triangles on noisy "
            "backgrounds, 256x192 PNG images) in COCO format: OUT/annotations/instances_train.json, "
            "OUT/annotations/instances_val.json and the image folders OUT/train and OUT/val. The same "
            "seed gives the same files. With --keypoints the same images come with each shape's "
            "four extreme points (top, right, bottom, left) as COCO keypoints. Prints the files it wrote."
        ),
    )
    parser.add_argument("out", metavar="OUT", help="the dataset folder (created if missing)")
    parser.add_argument(
        "--train",
        type=WholeNumber(1, MAX_SHAPES_IMAGES),
        default=1000,
        metavar="N",
        help="training images",
    )
    parser.add_argument(
        "--val",
        type=WholeNumber(1, MAX_SHAPES_IMAGES),
        default=100,
        metavar="N",
        help="validation images",
    )
    parser.add_argument(
        "--seed", type=WholeNumber(0), default=0, metavar="N", help="random seed of the drawings"
    )
    parser.add_argument(
        "--keypoints",
        action="store_true",
        help="annotate each shape's topmost, rightmost, bottommost and leftmost points as COCO "
        "keypoints (top, right, bottom, left; v=2 visible, 1 under a shape drawn later), with a skeleton",
    )
    return parser


def check(args: argparse.Namespace) -> None:
    output_folder("OUT", args.out)


def run(args: argparse.Namespace) -> int:
    return write_shapes(args.out, args.train, args.val, args.seed, keypoints=args.keypoints)


SPLITS = {"train": "training", "val": "validation"}


def write_shapes(out: str, train: int, val: int, seed: int = 0, keypoints: bool = False) -> int:
    """Write the dataset under `out` (with each shape's keypoints if asked), print one line per
    file and folder written; returns 0."""
    from maskrcnn.data.shapes import KEYPOINT_NAMES, SHAPES_OKS_SIGMAS, make_shapes, shapes_dataset_paths

    paths = shapes_dataset_paths(out)
    earlier = {split: _listed_images(paths[f"{split}_annotations"]) for split in SPLITS}
    make_shapes(out, train, val, seed, keypoints=keypoints)
    lines = []
    for split, name in SPLITS.items():
        annotations, folder = paths[f"{split}_annotations"], paths[f"{split}_images"]
        data = json.loads(annotations.read_text())
        listed = {image["file_name"] for image in data["images"]}
        for stale in sorted(earlier[split] - listed):
            (folder / stale).unlink(missing_ok=True)
        images, instances = _count(len(data["images"]), "image"), _count(len(data["annotations"]), "instance")
        if keypoints:
            visible = sum(v == 2 for a in data["annotations"] for v in a["keypoints"][2::3])
            instances += f" ({_count(visible, 'visible keypoint')})"
        lines.append((str(annotations), f"{name} annotations: {images}, {instances}"))
        lines.append((f"{folder}/", f"{images} ({name}, PNG)"))
    what = " with keypoints" if keypoints else ""
    print(f"wrote the shapes dataset{what} (seed {seed}) in {out}:")
    width = max(len(path) for path, _ in lines)
    for path, what in lines:
        print(f"  {path:<{width}}  {what}")
    if keypoints:
        sigmas = ",".join(f"{s:g}" for s in SHAPES_OKS_SIGMAS)
        print(
            f"keypoints {', '.join(KEYPOINT_NAMES)} of every shape; keypoint AP with their OKS sigmas: "
            f"model.keypoint_head.num_keypoints={len(KEYPOINT_NAMES)} "
            f"model.keypoint_head.oks_sigmas=[{sigmas}] (or eval --oks-sigmas {sigmas})"
        )
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _listed_images(annotations: Path) -> set[str]:
    """The image files an earlier make-shapes run listed in `annotations` (none if it is not one)."""
    try:
        data = json.loads(annotations.read_text())
        if data["info"]["description"] != "maskrcnn synthetic shapes":
            return set()
        names = {image["file_name"] for image in data["images"]}
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    # Only the plain names make_shapes writes: a hand-edited file must not remove anything else.
    return {n for n in names if isinstance(n, str) and n.endswith(".png") and Path(n).name == n}
