"""A COCO instance file being built from converted labels: images, categories, annotations,
what was skipped and why, and the split into training and validation files."""

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils

from maskrcnn.files import write_text_atomic


@dataclass
class CocoBuilder:
    """Categories by name (ids 1.. in the order given or first seen), images with their
    annotations, and the count of what was left out, by reason."""

    categories: dict[str, int] = field(default_factory=dict)
    images: list[dict] = field(default_factory=list)
    annotations: dict[int, list[dict]] = field(default_factory=dict)  # image id -> its annotations
    skipped: Counter = field(default_factory=Counter)  # what was left out, by reason
    notes: Counter = field(default_factory=Counter)  # what was kept and worth a word, by kind

    def category(self, name: str) -> int:
        if name not in self.categories:
            self.categories[name] = len(self.categories) + 1
        return self.categories[name]

    def add_image(self, file_name: str, height: int, width: int) -> int:
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        self.annotations[image_id] = []
        return image_id

    def add_polygons(self, image_id: int, category: str, polygons: list[list[float]]) -> None:
        """One instance of COCO polygons [[x1, y1, x2, y2, ...], ...] in pixels (one or more parts)."""
        image = self.images[image_id - 1]
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, image["height"], image["width"]))
        area, box = float(mask_utils.area(rle)), [float(v) for v in mask_utils.toBbox(rle)]
        self._add(image_id, category, [[float(v) for v in p] for p in polygons], area, box)

    def add_mask(self, image_id: int, category: str, mask: np.ndarray) -> None:
        """One instance given as a mask (H, W) bool: an exact RLE."""
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        area, box = float(mask_utils.area(rle)), [float(v) for v in mask_utils.toBbox(rle)]
        rle["counts"] = rle["counts"].decode("ascii")
        self._add(image_id, category, rle, area, box)

    def add_box(self, image_id: int, category: str, box: list[float]) -> None:
        """A box-only instance [x, y, w, h] (no segmentation: a box-only model trains on it)."""
        self._add(image_id, category, None, float(box[2] * box[3]), [float(v) for v in box])

    def _add(self, image_id: int, category: str, segmentation, area: float, box: list[float]) -> None:
        entry = {"image_id": image_id, "category_id": self.category(category), "bbox": box, "area": area}
        entry["iscrowd"] = 0
        if segmentation is not None:
            entry["segmentation"] = segmentation
        self.annotations[image_id].append(entry)

    def document(self, image_ids: list[int] | None = None) -> dict:
        """The COCO dict of these images (default: all), annotation ids 1.. in order."""
        images = self.images if image_ids is None else [self.images[i - 1] for i in image_ids]
        annotations = []
        for image in images:
            for entry in self.annotations[image["id"]]:
                annotations.append({"id": len(annotations) + 1, **entry})
        categories = [{"id": i, "name": name} for name, i in self.categories.items()]
        return {"images": images, "annotations": annotations, "categories": categories}

    def summary(self) -> str:
        """One line: images, instances per class, what was skipped and why."""
        per_class = Counter()
        names = {i: name for name, i in self.categories.items()}
        for entries in self.annotations.values():
            per_class.update(names[e["category_id"]] for e in entries)
        instances = ", ".join(f"{count} {name}" for name, count in per_class.most_common()) or "no instance"
        line = f"{len(self.images)} images, {sum(per_class.values())} instances ({instances})"
        if self.notes:
            line += "; " + ", ".join(f"{n} {kind}" for kind, n in self.notes.most_common())
        if self.skipped:
            line += "; skipped " + ", ".join(f"{n} {reason}" for reason, n in self.skipped.most_common())
        return line


def write_coco(builder: CocoBuilder, out: Path, val_fraction: float = 0.0, seed: int = 0) -> list[Path]:
    """out, or with `val_fraction` out's stem + _train.json and _val.json, split by image (the
    same seed, the same split); returns the files written (atomically)."""
    if not val_fraction:
        write_text_atomic(json.dumps(builder.document()), out)
        return [out]
    ids = [image["id"] for image in builder.images]
    random.Random(seed).shuffle(ids)
    count = min(max(1, round(val_fraction * len(ids))), len(ids) - 1) if len(ids) > 1 else 0
    val, train = sorted(ids[:count]), sorted(ids[count:])
    written = []
    for name, chosen in (("train", train), ("val", val)):
        path = out.with_name(f"{out.stem}_{name}.json")
        write_text_atomic(json.dumps(builder.document(chosen)), path)
        written.append(path)
    return written


def header_size(path: Path) -> tuple[int, int]:
    """(height, width) from the image's header (TIFF: its first series)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tiff:
            series = tiff.series[0]
            axes, shape = series.axes, series.shape
            return shape[axes.index("Y")], shape[axes.index("X")]
    from PIL import Image

    with Image.open(path) as picture:
        return picture.height, picture.width
