"""A COCO instance file being built from converted labels: images, categories, annotations,
what was skipped and why, and the split into training and validation files."""

import json
import os
import random
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils

from maskrcnn.data.images import TIFF_SUFFIXES
from maskrcnn.data.tiff import ORIENTATION_TAG
from maskrcnn.files import write_text_atomic

# EXIF orientations that turn the image a quarter: it is displayed (and read by `train`,
# `images.pil_to_array`) with width and height swapped.
QUARTER_TURNS = (5, 6, 7, 8)
EXIF_ORIENTATION = 0x0112


@dataclass
class CocoBuilder:
    """Categories by name (ids 1.. in the order given or first seen, or by name after
    `number_categories_by_name`), images with their annotations, and the count of what was
    left out, by reason."""

    categories: dict[str, int] = field(default_factory=dict)
    images: list[dict] = field(default_factory=list)
    # image id -> its annotations, each with its category's name (ids are given on writing)
    annotations: dict[int, list[dict]] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)  # what was left out, by reason
    notes: Counter = field(default_factory=Counter)  # what was kept and worth a word, by kind

    def category(self, name: str) -> int:
        if name not in self.categories:
            self.categories[name] = len(self.categories) + 1
        return self.categories[name]

    def number_categories_by_name(self) -> None:
        """Ids 1.. in sorted order of the names: files converted apart with the same classes
        agree on them, whatever order the labels were met in."""
        self.categories = {name: i for i, name in enumerate(sorted(self.categories), start=1)}

    def add_image(self, file_name: str, height: int, width: int) -> int:
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        self.annotations[image_id] = []
        return image_id

    def add_polygons(self, image_id: int, category: str, polygons: list[list[float]], what: str) -> bool:
        """One instance of COCO polygons [[x1, y1, x2, y2, ...], ...] in pixels (one or more
        parts). One without a pixel in the image is left out, counted as `what` with its reason
        (its box would be [0, 0, 0, 0]); returns whether it was added."""
        height, width = self.size(image_id)
        rle = polygons_rle(polygons, height, width)
        if not mask_utils.area(rle):
            points = np.array([v for p in polygons for v in p], dtype=np.float64).reshape(-1, 2)
            self.count_empty(what, len(polygons), points.min(0), points.max(0), (height, width))
            return False
        area, box = float(mask_utils.area(rle)), [float(v) for v in mask_utils.toBbox(rle)]
        self._add(image_id, category, [[float(v) for v in p] for p in polygons], area, box)
        return True

    def add_mask(self, image_id: int, category: str, mask: np.ndarray) -> None:
        """One instance given as a mask (H, W) bool with a pixel set: an exact RLE."""
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        area, box = float(mask_utils.area(rle)), [float(v) for v in mask_utils.toBbox(rle)]
        rle["counts"] = rle["counts"].decode("ascii")
        self._add(image_id, category, rle, area, box)

    def add_box(self, image_id: int, category: str, box: list[float], what: str) -> bool:
        """A box-only instance [x, y, w, h] (no segmentation: a box-only model trains on it),
        clipped to the image as polygons are; one with nothing in the image is left out,
        counted as `what`. Returns whether it was added."""
        height, width = self.size(image_id)
        x1, y1 = max(box[0], 0.0), max(box[1], 0.0)
        x2, y2 = min(box[0] + box[2], float(width)), min(box[1] + box[3], float(height))
        if x2 <= x1 or y2 <= y1:
            corners = np.array([box[:2], [box[0] + box[2], box[1] + box[3]]], dtype=np.float64)
            self.count_empty(what, 1, corners.min(0), corners.max(0), (height, width))
            return False
        self._add(image_id, category, None, (x2 - x1) * (y2 - y1), [x1, y1, x2 - x1, y2 - y1])
        return True

    def size(self, image_id: int) -> tuple[int, int]:
        image = self.images[image_id - 1]
        return image["height"], image["width"]

    def count_empty(self, what: str, count: int, low, high, size, why: str = "") -> None:
        """Count `count` of `what` left out for want of a pixel in the image, with the reason:
        their extent (low and high (x, y)) lies outside the image, else `why` or no area."""
        height, width = size
        if high[0] <= 0 or high[1] <= 0 or low[0] >= width or low[1] >= height:
            why = "outside it"
        why = why or "no area: a line, or less than a pixel"
        self.skipped[f"{what} without a pixel in the image ({why})"] += count

    def _add(self, image_id: int, category: str, segmentation, area: float, box: list[float]) -> None:
        self.category(category)
        entry = {"image_id": image_id, "category": category, "bbox": box, "area": area, "iscrowd": 0}
        if segmentation is not None:
            entry["segmentation"] = segmentation
        self.annotations[image_id].append(entry)

    def document(self, image_ids: list[int] | None = None) -> dict:
        """The COCO dict of these images (default: all), annotation ids 1.. in order."""
        images = self.images if image_ids is None else [self.images[i - 1] for i in image_ids]
        annotations = []
        for image in images:
            for entry in self.annotations[image["id"]]:
                fields = {key: value for key, value in entry.items() if key != "category"}
                fields["category_id"] = self.categories[entry["category"]]
                annotations.append({"id": len(annotations) + 1, **fields})
        ordered = sorted(self.categories.items(), key=lambda category: category[1])
        categories = [{"id": i, "name": name} for name, i in ordered]
        return {"images": images, "annotations": annotations, "categories": categories}

    def summary(self) -> str:
        """One line: images, instances per class, what was skipped and why."""
        per_class = Counter(e["category"] for entries in self.annotations.values() for e in entries)
        instances = ", ".join(f"{count} {name}" for name, count in per_class.most_common()) or "no instance"
        line = f"{len(self.images)} images, {sum(per_class.values())} instances ({instances})"
        if self.notes:
            line += "; " + ", ".join(f"{n} {kind}" for kind, n in self.notes.most_common())
        if self.skipped:
            line += "; skipped " + ", ".join(f"{n} {reason}" for reason, n in self.skipped.most_common())
        return line


def polygons_rle(polygons: list[list[float]], height: int, width: int) -> dict:
    """The RLE of COCO polygons (parts of one instance) as pycocotools, and so `train`, draws them."""
    return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))


def write_coco(builder: CocoBuilder, out: Path, val_fraction: float = 0.0, seed: int = 0) -> list[Path]:
    """out, or with `val_fraction` out's stem + _train.json and _val.json, split by image (the
    same seed, the same split; each file has at least one image); returns the files written
    (atomically). Raises ValueError, writing nothing, for a split of fewer than 2 images."""
    if not val_fraction:
        write_text_atomic(json.dumps(builder.document()), out)
        return [out]
    ids = [image["id"] for image in builder.images]
    if len(ids) < 2:
        # An empty validation file would evaluate to AP 0.0 everywhere, as if the model were bad.
        raise ValueError(
            f"--val-fraction {val_fraction:g}: {len(ids)} image{'s' * (len(ids) != 1)} converted, too "
            "few to split (the training and the validation file need one image each); leave it out "
            "to write one file"
        )
    random.Random(seed).shuffle(ids)
    count = min(max(1, round(val_fraction * len(ids))), len(ids) - 1)
    val, train = sorted(ids[:count]), sorted(ids[count:])
    written = []
    for name, chosen in (("train", train), ("val", val)):
        path = out.with_name(f"{out.stem}_{name}.json")
        write_text_atomic(json.dumps(builder.document(chosen)), path)
        written.append(path)
    return written


def header_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image as `train` reads it, from its header: a TIFF's first series,
    other files as displayed; an (EXIF or TIFF) orientation 5 to 8 swaps the stored width and
    height (`images.pil_to_array` and `tiff.apply_orientation` turn the pixels)."""
    if path.suffix.lower() in TIFF_SUFFIXES:
        import tifffile

        with tifffile.TiffFile(path) as tiff:
            series = tiff.series[0]
            axes, shape = series.axes, series.shape
            turned = series.keyframe.tags.valueof(ORIENTATION_TAG) in QUARTER_TURNS  # as read
            height, width = shape[axes.index("Y")], shape[axes.index("X")]
            return (width, height) if turned else (height, width)
    from PIL import Image

    with Image.open(path) as picture:
        height, width = picture.height, picture.width
        if _orientation(picture, path) in QUARTER_TURNS:
            return width, height
        return height, width


def _orientation(picture, path: Path) -> int:
    """The EXIF orientation PIL's `exif_transpose` applies when `train` reads the image."""
    from PIL import Image

    if picture.format == "PNG":
        if _png_metadata_after_pixels(path):
            picture.load()  # PIL reads chunks after the pixels only when it decodes them
        else:
            # PIL's PNG getexif decodes the pixels to look past them; nothing is there, and
            # the generic getexif reads EXIF (and XMP) of the chunks before them as load does.
            return Image.Image.getexif(picture).get(EXIF_ORIENTATION, 1)
    return picture.getexif().get(EXIF_ORIENTATION, 1)


def _png_metadata_after_pixels(path: Path) -> bool:
    """Whether a PNG has an eXIf or text chunk (where EXIF and XMP are kept) after its pixels:
    read chunk by chunk from their headers, nothing decoded."""
    with open(path, "rb") as file:
        file.seek(8)  # the signature
        pixels = False
        while len(head := file.read(8)) == 8:
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IEND":
                break
            if kind == b"IDAT":
                pixels = True
            elif pixels and kind in (b"eXIf", b"tEXt", b"zTXt", b"iTXt"):
                return True
            file.seek(length + 4, os.SEEK_CUR)  # the data and its CRC
    return False
