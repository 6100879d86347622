"""A COCO-format instance segmentation dataset: an annotation JSON plus a folder of images.

Annotations are checked once, when the dataset is built: broken ones are repaired or dropped
and counted, and one `AnnotationWarning` per dataset says how many and why, so that a few bad
labels never stop a training run. Crowd regions are left out of the targets (and counted, but
they are not errors). Category ids, whatever they are, become contiguous labels 1..K in sorted-id
order; 0 is the background.
"""

import json
import math
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import torch
from torch import Tensor
from torch.utils.data import Dataset

from maskrcnn.data.images import load_image


class AnnotationWarning(UserWarning):
    """Some annotations of a dataset were dropped or repaired."""


class BadImageWarning(UserWarning):
    """An image file was missing or unreadable and its sample was skipped."""


@dataclass(frozen=True)
class Instance:
    """One usable annotation: a contiguous label, a box clipped to the image, and its segmentation.

    box: (x1, y1, x2, y2) in image pixels. segmentation: a list of polygons (flat [x, y, ...]
    lists of at least 6 numbers) or an RLE dict with "size" and "counts" (string or list).
    """

    label: int
    box: tuple[float, float, float, float]
    segmentation: list | dict


@dataclass(frozen=True)
class ImageRecord:
    image_id: int
    file_name: str
    height: int
    width: int
    instances: tuple[Instance, ...]


class CocoDataset(Dataset):
    """Samples `(image, target)` from a COCO instance-segmentation annotation file.

    image: (3, H, W) float32 RGB in [0, 1]. target: `boxes` (G, 4) float32 xyxy pixels, `labels`
    (G,) int64 in 1..K, `masks` (G, H, W) uint8 in {0, 1}, `image_id` int, `file_name` str; G may
    be 0. `transform(image, target, generator)` (see data.transforms) runs last.

    Index with `dataset[i]` or `dataset[(i, seed)]`: with a seed, the transform's random choices
    come from a generator seeded by (i, seed) alone, so an epoch can be replayed exactly in any
    worker process. Without one they come from a generator seeded from torch's global generator.

    drop_images_without_annotations: leave out images that have no usable instance (none at all,
    only crowd regions, or only dropped ones). skip_bad_images: a missing or undecodable image
    gives None (and one BadImageWarning per file) instead of a ValueError; `collate` drops them.
    """

    def __init__(
        self,
        annotation_file,
        image_dir,
        *,
        transform=None,
        drop_images_without_annotations: bool = False,
        skip_bad_images: bool = False,
    ):
        self.annotation_file = str(annotation_file)
        self.image_dir = Path(image_dir)
        self.transform = transform
        self.skip_bad_images = skip_bad_images
        self._warned_files: set[str] = set()

        data = _read_json(self.annotation_file)
        categories = _list_field(data, "categories", self.annotation_file)
        images = _list_field(data, "images", self.annotation_file)
        annotations = _list_field(data, "annotations", self.annotation_file)

        names = _category_names(categories, self.annotation_file)
        self.category_ids: tuple[int, ...] = tuple(sorted(names))
        self.class_names: tuple[str, ...] = ("__background__",) + tuple(names[i] for i in self.category_ids)
        self.num_classes = len(self.class_names)
        label_of = {category_id: label for label, category_id in enumerate(self.category_ids, start=1)}

        sizes = _image_entries(images, self.annotation_file)
        checker = _AnnotationChecker(label_of)
        instances: dict[int, list[Instance]] = {image_id: [] for image_id in sizes}
        for annotation in annotations:
            if not isinstance(annotation, dict):
                checker.drop("malformed annotation")
                continue
            image_id = annotation.get("image_id")
            if image_id not in sizes:
                checker.drop("unknown image id")
                continue
            instance = checker.check(annotation, *sizes[image_id][1:])
            if instance is not None:
                instances[image_id].append(instance)

        self.records: list[ImageRecord] = [
            ImageRecord(image_id, file_name, height, width, tuple(instances[image_id]))
            for image_id, (file_name, height, width) in sizes.items()
            if instances[image_id] or not drop_images_without_annotations
        ]
        self.annotation_summary: dict[str, int] = dict(checker.counts)
        message = checker.summary()
        if message:
            warnings.warn(f"{self.annotation_file}: {message}", AnnotationWarning, stacklevel=2)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def image_ids(self) -> list[int]:
        return [record.image_id for record in self.records]

    @property
    def aspect_ratios(self) -> list[float]:
        """width / height of every image, from the annotation file (no decoding), for batching by shape."""
        return [record.width / record.height for record in self.records]

    def label_to_category_id(self, label: int) -> int:
        """A contiguous label 1..K -> the category id used in the annotation file."""
        if not 1 <= label < self.num_classes:
            raise ValueError(f"label {label} is not a class of this dataset (1..{self.num_classes - 1})")
        return self.category_ids[label - 1]

    def __getitem__(self, item):
        index, seed = item if isinstance(item, tuple) else (item, None)
        index = range(len(self.records))[index]
        record = self.records[index]
        path = self.image_dir / record.file_name
        try:
            image = load_image(path)
            if tuple(image.shape[-2:]) != (record.height, record.width):
                raise ValueError(
                    f"{path}: image is {image.shape[-1]}x{image.shape[-2]} pixels but "
                    f"{self.annotation_file} says {record.width}x{record.height}"
                )
        except ValueError as error:
            if not self.skip_bad_images:
                raise
            if str(path) not in self._warned_files:
                self._warned_files.add(str(path))
                warnings.warn(f"skipping image: {error}", BadImageWarning, stacklevel=2)
            return None

        target = _target(record)
        if self.transform is not None:
            image, target = self.transform(image, target, _generator(index, seed))
        return image, target


def collate(batch: list) -> tuple[list[Tensor], list[dict]]:
    """A DataLoader collate_fn: (image, target) samples -> (images, targets), leaving out None samples."""
    samples = [sample for sample in batch if sample is not None]
    return [image for image, _ in samples], [target for _, target in samples]


def _generator(index: int, seed: int | None) -> torch.Generator:
    if seed is None:
        # The global generator differs per DataLoader worker, so unseeded workers still differ.
        seed_value = int(torch.randint(2**62, (), dtype=torch.int64))
    else:
        # SeedSequence mixes (seed, index) so that neighbouring pairs give unrelated streams.
        words = np.random.SeedSequence([seed % 2**64, index % 2**64]).generate_state(2, np.uint32)
        seed_value = (int(words[0]) << 31) ^ int(words[1])
    return torch.Generator().manual_seed(seed_value)


def _target(record: ImageRecord) -> dict:
    height, width = record.height, record.width
    instances = record.instances
    if instances:
        rles = [_to_rle(instance.segmentation, height, width) for instance in instances]
        # decode gives (H, W, G) in Fortran order; one copy makes it (G, H, W) contiguous.
        masks = torch.from_numpy(np.ascontiguousarray(mask_utils.decode(rles).transpose(2, 0, 1)))
    else:
        masks = torch.zeros((0, height, width), dtype=torch.uint8)
    return {
        "boxes": torch.tensor([i.box for i in instances], dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor([i.label for i in instances], dtype=torch.int64),
        "masks": masks,
        "image_id": record.image_id,
        "file_name": record.file_name,
    }


def _to_rle(segmentation, height: int, width: int) -> dict:
    """Polygons or an RLE (compressed or not) -> one compressed RLE of an (height, width) image."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


class _AnnotationChecker:
    """Turns raw annotations into Instances, counting what it drops or repairs and why."""

    def __init__(self, label_of: dict[int, int]):
        self.label_of = label_of
        self.counts: Counter[str] = Counter()  # reason -> dropped annotations
        self.unknown_category_ids: Counter = Counter()
        self.crowd = 0
        self.removed_polygons = 0  # from annotations that kept other polygons

    def drop(self, reason: str) -> None:
        self.counts[reason] += 1

    def check(self, annotation: dict, height: int, width: int) -> Instance | None:
        if annotation.get("iscrowd", 0):
            self.crowd += 1
            return None
        category_id = annotation.get("category_id")
        if category_id not in self.label_of:
            self.unknown_category_ids[category_id] += 1
            return None
        segmentation = self._segmentation(annotation.get("segmentation"), height, width)
        if segmentation is None:
            return None
        box = self._box(annotation.get("bbox"), segmentation, height, width)
        if box is None:
            return None
        return Instance(self.label_of[category_id], box, segmentation)

    def _segmentation(self, segmentation, height: int, width: int):
        if not segmentation:
            self.drop("no segmentation")
            return None
        if isinstance(segmentation, dict):
            return self._rle(segmentation, height, width)
        if not isinstance(segmentation, list):
            self.drop("malformed segmentation")
            return None
        if all(isinstance(v, (int, float)) for v in segmentation):
            segmentation = [segmentation]  # some tools write one polygon without the outer list
        polygons, reason = [], None
        for polygon in segmentation:
            if not isinstance(polygon, list) or not all(isinstance(v, (int, float)) for v in polygon):
                reason = "malformed polygon"
            elif len(polygon) < 6:
                reason = "fewer than 3 polygon points"
            elif len(polygon) % 2 or not all(math.isfinite(v) for v in polygon):
                reason = "malformed polygon"
            else:
                polygons.append([float(v) for v in polygon])
        if not polygons:
            self.drop(reason)
            return None
        self.removed_polygons += len(segmentation) - len(polygons)
        return polygons

    def _rle(self, rle: dict, height: int, width: int):
        counts, size = rle.get("counts"), rle.get("size")
        if not isinstance(size, (list, tuple)) or list(size) != [height, width]:
            self.drop("RLE size differs from the image size")
            return None
        if isinstance(counts, list):
            if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != height * width:
                self.drop("malformed RLE")
                return None
        elif isinstance(counts, (str, bytes)):
            counts = counts.decode() if isinstance(counts, bytes) else counts
        else:
            self.drop("malformed RLE")
            return None
        return {"size": [height, width], "counts": counts}

    def _box(self, bbox, segmentation, height: int, width: int):
        if bbox is None:
            # No box in the file: take the mask's extent, which toBbox reads from the RLE.
            bbox = mask_utils.toBbox(_to_rle(segmentation, height, width)).tolist()
            if bbox[2] <= 0 or bbox[3] <= 0:
                self.drop("empty mask")
                return None
        if (
            not isinstance(bbox, (list, tuple))
            or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)
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
            ids = ", ".join(str(i) for i in sorted(self.unknown_category_ids, key=str))
            plural = "s" if len(self.unknown_category_ids) > 1 else ""
            reasons.append(f"{unknown} unknown category id{plural} {ids}")
        parts = []
        dropped = sum(self.counts.values()) + unknown
        if dropped:
            parts.append(f"dropped {dropped} annotation{'s' if dropped > 1 else ''} ({', '.join(reasons)})")
        if self.removed_polygons:
            parts.append(f"removed {self.removed_polygons} broken polygons from annotations that kept others")
        if parts and self.crowd:
            parts.append(f"{self.crowd} crowd regions left out of the targets")
        return "; ".join(parts)


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except FileNotFoundError:
        raise ValueError(f"{path}: annotation file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with 'images', 'annotations' and 'categories'")
    return data


def _list_field(data: dict, field: str, path: str) -> list:
    if field not in data:
        raise ValueError(f"{path}: missing field '{field}' (not a COCO instances file?)")
    if not isinstance(data[field], list):
        raise ValueError(f"{path}: field '{field}' must be a list, got {type(data[field]).__name__}")
    return data[field]


def _category_names(categories: list, path: str) -> dict[int, str]:
    names: dict[int, str] = {}
    for i, category in enumerate(categories):
        if not isinstance(category, dict) or not isinstance(category.get("id"), int):
            raise ValueError(f"{path}: field 'categories[{i}].id' is missing or not an integer")
        if category["id"] in names:
            raise ValueError(f"{path}: field 'categories[{i}].id' repeats category id {category['id']}")
        names[category["id"]] = str(category.get("name", category["id"]))
    if not names:
        raise ValueError(f"{path}: field 'categories' is empty; a detector needs at least one class")
    return names


def _image_entries(images: list, path: str) -> dict[int, tuple[str, int, int]]:
    """image id -> (file_name, height, width), in file order."""
    entries: dict[int, tuple[str, int, int]] = {}
    for i, image in enumerate(images):
        if not isinstance(image, dict):
            raise ValueError(f"{path}: field 'images[{i}]' is not an object")
        for key, kind in (("id", int), ("file_name", str), ("width", int), ("height", int)):
            if not isinstance(image.get(key), kind) or (kind is int and key != "id" and image[key] <= 0):
                raise ValueError(f"{path}: field 'images[{i}].{key}' is missing or invalid")
        if image["id"] in entries:
            raise ValueError(f"{path}: field 'images[{i}].id' repeats image id {image['id']}")
        entries[image["id"]] = (image["file_name"], image["height"], image["width"])
    return entries
