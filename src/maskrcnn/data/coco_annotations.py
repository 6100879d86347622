"""Checking a COCO annotation file: what is kept, what is repaired, what is dropped and why.

A file is untrusted input. Its structure (the `images` and `categories` lists, the fields of
each image and category) must be right, or the file fails with one ValueError naming the file
and the field. Its annotations may be wrong one by one: each broken annotation is dropped and
counted under a reason, so that a few bad labels never stop a run. Whatever is kept can be
rasterized by pycocotools without surprises: polygons have an even number of finite
coordinates near the image, RLE run lengths add up to the image's size.
"""

import json
import math
import warnings
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np
import pycocotools.mask as mask_utils

from maskrcnn.data.coco_keypoints import KeypointChecker

_PYCOCOTOOLS_ARRAY_COPY = "__array__ implementation doesn't accept a copy keyword"
# pycocotools stores run lengths and areas as 32-bit unsigned integers.
MAX_IMAGE_PIXELS = 2**31 - 1
# Larger ids do not fit the int64 arrays of COCOeval and of the model's outputs.
_MAX_ID = 2**63 - 1


class AnnotationWarning(UserWarning):
    """Some annotations of a dataset were dropped or repaired."""


@dataclass(frozen=True)
class Instance:
    """One usable annotation: a contiguous label, a box clipped to the image, and its segmentation.

    box: (x1, y1, x2, y2) in image pixels. segmentation: a list of polygons (flat [x, y, ...]
    lists of at least 6 numbers) or an RLE dict with "size" and "counts" (string or list).
    keypoints: (3K,) [x, y, v, ...] in image pixels (x = y = 0 where v = 0) when the dataset is
    read with its keypoints (data.coco_keypoints), else None; None for crowd regions.
    """

    label: int
    box: tuple[float, float, float, float]
    segmentation: list | dict
    keypoints: tuple[float, ...] | None = None


@dataclass(frozen=True)
class ImageRecord:
    """One image of the file: its training instances, and its crowd regions (ignored by COCO AP)."""

    image_id: int
    file_name: str
    height: int
    width: int
    instances: tuple[Instance, ...]
    crowd: tuple[Instance, ...] = ()


def to_rle(segmentation, height: int, width: int) -> dict:
    """Polygons or an RLE (compressed or not) -> one compressed RLE of an (height, width) image."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def decode_rles(rles: list[dict]) -> np.ndarray:
    """pycocotools' mask.decode of a list of RLEs: (H, W, N) uint8 masks in Fortran order.

    pycocotools (up to 2.0.11, the latest) hands numpy its masks through an `__array__`
    without the `copy` keyword, which numpy 2 reports with a DeprecationWarning on the first
    decode of every process; the masks are right. That one message is silenced here, around
    the call, rather than shown to every user (nor filtered for the whole process).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", _PYCOCOTOOLS_ARRAY_COPY, DeprecationWarning)
        return mask_utils.decode(rles)


def read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except FileNotFoundError:
        raise ValueError(f"{path}: annotation file not found") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not an annotation file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable JSON file ({error})") from None
    except RecursionError:  # json gives up on very deeply nested arrays
        raise ValueError(f"{path}: not a readable JSON file (nested too deeply)") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with 'images', 'annotations' and 'categories'")
    return data


def list_field(data: dict, field: str, path: str) -> list:
    if field not in data:
        raise ValueError(f"{path}: missing field '{field}' (not a COCO instances file?)")
    if not isinstance(data[field], list):
        raise ValueError(f"{path}: field '{field}' must be a list, got {type(data[field]).__name__}")
    return data[field]


def category_names(categories: list, path: str) -> dict[int, str]:
    """category id -> name, in file order; the name defaults to the id."""
    names: dict[int, str] = {}
    for i, category in enumerate(categories):
        if not isinstance(category, dict) or not _is_int(category.get("id")):
            raise ValueError(f"{path}: field 'categories[{i}].id' is missing or not an integer")
        if abs(category["id"]) > _MAX_ID:
            raise ValueError(f"{path}: field 'categories[{i}].id' is too large ({category['id']})")
        if category["id"] in names:
            raise ValueError(f"{path}: field 'categories[{i}].id' repeats category id {category['id']}")
        name = category.get("name", str(category["id"]))
        if not isinstance(name, str):
            raise ValueError(f"{path}: field 'categories[{i}].name' must be a string, got {_show(name)}")
        names[category["id"]] = name
    if not names:
        raise ValueError(f"{path}: field 'categories' is empty; a detector needs at least one class")
    return names


def image_entries(images: list, path: str) -> dict[int, tuple[str, int, int]]:
    """image id -> (file_name, height, width), in file order."""
    entries: dict[int, tuple[str, int, int]] = {}
    for i, image in enumerate(images):
        if not isinstance(image, dict):
            raise ValueError(f"{path}: field 'images[{i}]' is not an object")
        for key in ("id", "file_name", "width", "height"):
            if key not in image:
                raise ValueError(f"{path}: field 'images[{i}].{key}' is missing")
        image_id, file_name, width, height = (image[k] for k in ("id", "file_name", "width", "height"))
        if not _is_int(image_id) or abs(image_id) > _MAX_ID:
            raise ValueError(f"{path}: field 'images[{i}].id' must be an integer, got {_show(image_id)}")
        if not isinstance(file_name, str) or not file_name or "\0" in file_name:
            raise ValueError(
                f"{path}: field 'images[{i}].file_name' must be a file name, got {_show(file_name)}"
            )
        for key, value in (("width", width), ("height", height)):
            if not _is_int(value) or value <= 0:
                raise ValueError(
                    f"{path}: field 'images[{i}].{key}' must be a positive integer, got {_show(value)}"
                )
        if width * height > MAX_IMAGE_PIXELS:
            raise ValueError(
                f"{path}: field 'images[{i}].width' and 'height' say {width}x{height} pixels, "
                f"more than the {MAX_IMAGE_PIXELS} an image's masks can hold"
            )
        if image_id in entries:
            raise ValueError(f"{path}: field 'images[{i}].id' repeats image id {image_id}")
        entries[image_id] = (file_name, height, width)
    return entries


class AnnotationChecker:
    """Turns raw annotations into Instances and crowd regions, counting what it drops and why.

    label_of: category id -> contiguous label. sizes: image id -> (file_name, height, width).
    keypoints: reads the instances' keypoints too (None: they are left out).
    boxes_only: for a model without masks: an annotation without a segmentation is kept by its
    bbox (its segmentation is then the box's rectangle, which such a model never reads).
    """

    def __init__(
        self,
        label_of: dict[int, int],
        sizes: dict[int, tuple[str, int, int]],
        keypoints: KeypointChecker | None = None,
        boxes_only: bool = False,
    ):
        self.label_of = label_of
        self.sizes = sizes
        self.keypoints = keypoints
        self.boxes_only = boxes_only
        self.kept_by_box = 0  # annotations without a segmentation kept for a box-only model
        self.counts: Counter[str] = Counter()  # reason -> dropped annotations
        self.unknown_category_ids: Counter[int] = Counter()
        self.crowd = 0
        self.removed_polygons = 0  # from annotations that kept other polygons

    def sort(self, annotations: list) -> dict[int, tuple[list[Instance], list[Instance]]]:
        """image id -> (instances, crowd regions) of the usable annotations, in file order."""
        kept: dict[int, tuple[list[Instance], list[Instance]]] = {i: ([], []) for i in self.sizes}
        for annotation in annotations:
            if not isinstance(annotation, dict):
                self.drop("malformed annotation")
                continue
            image_id = annotation.get("image_id")
            if not _is_int(image_id):
                self.drop("image_id missing or not an integer")
                continue
            if image_id not in self.sizes:
                self.drop("unknown image id")
                continue
            iscrowd = annotation.get("iscrowd")
            if iscrowd is None:  # absent or null: an ordinary object
                iscrowd = 0
            if not _is_int(iscrowd) or iscrowd not in (0, 1):
                self.drop("iscrowd not 0 or 1")
                continue
            instance = self.check(annotation, *self.sizes[image_id][1:])
            if instance is not None:
                if self.keypoints is not None and not iscrowd:
                    points = self.keypoints.read(annotation, annotation["category_id"])
                    instance = replace(instance, keypoints=points)
                kept[image_id][iscrowd].append(instance)
                self.crowd += iscrowd
        return kept

    def drop(self, reason: str) -> None:
        self.counts[reason] += 1

    def check(self, annotation: dict, height: int, width: int) -> Instance | None:
        category_id = annotation.get("category_id")
        if not _is_int(category_id):
            self.drop("category_id missing or not an integer")
            return None
        if category_id not in self.label_of:
            self.unknown_category_ids[category_id] += 1
            return None
        raw = annotation.get("segmentation")
        if self.boxes_only and (raw is None or (isinstance(raw, (list, dict)) and not raw)):
            if annotation.get("bbox") is None:
                self.drop("no segmentation and no box")
                return None
            box = self._box(annotation.get("bbox"), None, height, width)
            if box is None:
                return None
            self.kept_by_box += 1
            x1, y1, x2, y2 = box
            return Instance(self.label_of[category_id], box, [[x1, y1, x2, y1, x2, y2, x1, y2]])
        segmentation = self._segmentation(raw, height, width)
        if segmentation is None:
            return None
        box = self._box(annotation.get("bbox"), segmentation, height, width)
        if box is None:
            return None
        return Instance(self.label_of[category_id], box, segmentation)

    def _segmentation(self, segmentation, height: int, width: int):
        if isinstance(segmentation, (list, dict)) and not segmentation:
            self.drop("no segmentation")
            return None
        if isinstance(segmentation, dict):
            return self._rle(segmentation, height, width)
        if not isinstance(segmentation, list):
            self.drop("no segmentation" if segmentation is None else "malformed segmentation")
            return None
        if all(_is_number(v) for v in segmentation):
            segmentation = [segmentation]  # some tools write one polygon without the outer list
        polygons, reason = [], None
        for polygon in segmentation:
            if not isinstance(polygon, list) or not all(_is_number(v) for v in polygon):
                reason = "malformed polygon"
            elif len(polygon) < 6:
                reason = "fewer than 3 polygon points"
            elif len(polygon) % 2 or not all(math.isfinite(v) for v in polygon):
                reason = "malformed polygon"
            elif not _near_the_image(polygon, height, width):
                reason = "polygon far outside the image"
            else:
                polygons.append([float(v) for v in polygon])
        if not polygons:
            self.drop(reason)
            return None
        self.removed_polygons += len(segmentation) - len(polygons)
        return polygons

    def _rle(self, rle: dict, height: int, width: int):
        problem = rle_problem(rle, height, width)
        if problem:
            self.drop(problem)
            return None
        return {"size": [height, width], "counts": rle["counts"]}

    def _box(self, bbox, segmentation, height: int, width: int):
        if bbox is None:
            # No box in the file: take the mask's extent, which toBbox reads from the RLE.
            bbox = mask_utils.toBbox(to_rle(segmentation, height, width)).tolist()
            if bbox[2] <= 0 or bbox[3] <= 0:
                self.drop("empty mask")
                return None
        if (
            not isinstance(bbox, list)
            or len(bbox) != 4
            or not all(_is_number(v) and math.isfinite(v) for v in bbox)
        ):
            self.drop("malformed box")
            return None
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            self.drop("zero-area box")
            return None
        x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))
        if x2 <= x1 or y2 <= y1:
            self.drop("box outside the image")
            return None
        return x1, y1, x2, y2

    def summary(self) -> str:
        """One line, e.g. "dropped 5 annotations (3 fewer than 3 polygon points, 1 zero-area box, ...)"."""
        reasons = [f"{n} {reason}" for reason, n in self.counts.most_common()]
        unknown = sum(self.unknown_category_ids.values())
        if unknown:
            ids = ", ".join(str(i) for i in sorted(self.unknown_category_ids))
            plural = "s" if len(self.unknown_category_ids) > 1 else ""
            reasons.append(f"{unknown} unknown category id{plural} {ids}")
        parts = []
        if self.kept_by_box:
            plural = "s" if self.kept_by_box > 1 else ""
            parts.append(f"kept {self.kept_by_box} annotation{plural} without a segmentation by its box")
        dropped = sum(self.counts.values()) + unknown
        if dropped:
            parts.append(f"dropped {dropped} annotation{'s' if dropped > 1 else ''} ({', '.join(reasons)})")
        if self.removed_polygons:
            parts.append(f"removed {self.removed_polygons} broken polygons from annotations that kept others")
        if self.keypoints is not None:
            parts.extend(self.keypoints.summary())
        if parts and self.crowd:
            parts.append(f"{self.crowd} crowd regions left out of the training targets")
        return "; ".join(parts)


def rle_problem(rle, height: int, width: int) -> str | None:
    """What makes `rle` unusable as a mask of an (height, width) image, or None if nothing.

    rle: {"size": [height, width], "counts": run lengths (a list) or COCO's compressed string}.
    """
    if not isinstance(rle, dict):
        return "malformed RLE"
    counts, size = rle.get("counts"), rle.get("size")
    if not isinstance(size, list) or len(size) != 2 or not all(_is_int(v) for v in size):
        return "malformed RLE"
    if size != [height, width]:
        return "RLE size differs from the image size"
    if isinstance(counts, list):
        runs = counts if all(_is_int(c) for c in counts) else None
    elif isinstance(counts, str):
        runs = _compressed_runs(counts)
    else:
        runs = None
    # pycocotools trusts the runs: too few leave pixels undefined, too many overrun the mask.
    if runs is None or any(r < 0 for r in runs) or sum(runs) != height * width:
        return "malformed RLE"
    return None


def _compressed_runs(counts: str) -> list[int] | None:
    """The run lengths of COCO's compressed RLE string, or None if `counts` is not one.

    Each run is written in 5-bit groups, least significant first, as the characters chr(48 + g);
    bit 0x20 of a group says another group follows, bit 0x10 of the last is the sign. From the
    fourth run on, the string holds the difference to the run two places before.
    """
    runs: list[int] = []
    value = shift = 0
    for char in counts:
        group = ord(char) - 48
        if not 0 <= group < 64 or shift > 30:  # seven groups hold any 32-bit run
            return None
        value |= (group & 0x1F) << shift
        shift += 5
        if group & 0x20:
            continue
        if group & 0x10:
            value -= 1 << shift
        runs.append(value + runs[-2] if len(runs) > 2 else value)
        value = shift = 0
    return runs if shift == 0 else None


def _near_the_image(polygon: list, height: int, width: int) -> bool:
    # pycocotools walks every edge pixel by pixel: a coordinate of 1e7 takes seconds, 1e10
    # overflows. Within one image size of the image no real annotation is cut short.
    xs, ys = polygon[0::2], polygon[1::2]
    return -width <= min(xs) and max(xs) <= 2 * width and -height <= min(ys) and max(ys) <= 2 * height


def _is_int(value) -> bool:
    # JSON true/false load as bool, a subclass of int: they are not numbers in a COCO file.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _show(value) -> str:
    text = json.dumps(value) if isinstance(value, (str, bool)) or value is None else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
