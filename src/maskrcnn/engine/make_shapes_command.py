"""`maskrcnn make-shapes`: write the synthetic shapes dataset and say what was written.

Rerun into the same folder with fewer images, it removes the images of the earlier run that the
new annotation files no longer list (found through the earlier annotation files, so only images
this command wrote are ever removed): an image folder then holds what its annotations describe.
"""

import json
from pathlib import Path

from maskrcnn.data.shapes import KEYPOINT_NAMES, SHAPES_OKS_SIGMAS, make_shapes, shapes_dataset_paths

SPLITS = {"train": "training", "val": "validation"}


def make_shapes_command(out: str, train: int, val: int, seed: int = 0, keypoints: bool = False) -> int:
    """Write the dataset under `out` (with each shape's keypoints if asked), print one line per
    file and folder written; returns 0."""
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
