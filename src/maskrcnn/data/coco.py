"""A COCO-format instance segmentation dataset: an annotation JSON plus a folder of images.

Annotations are checked once, when the dataset is built: broken ones are repaired or dropped
and counted, and one `AnnotationWarning` per dataset says how many and why, so that a few bad
labels never stop a training run; a file whose images or categories are broken fails with one
ValueError naming the file and the field. Crowd regions are left out of the training targets but
kept in each record's `crowd` (evaluation treats them as ignore regions). Category ids, whatever
they are, become contiguous labels 1..K in sorted-id order; 0 is the background. Read with
`keypoints=True`, a person-keypoints file's keypoints come too (data.coco_keypoints).
"""

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from maskrcnn.config import InputConfig
from maskrcnn.config.validate import check_input_config
from maskrcnn.data.coco_annotations import (
    AnnotationChecker,
    AnnotationWarning,
    ImageRecord,
    Instance,
    category_names,
    decode_rles,
    image_entries,
    list_field,
    read_json,
    to_rle,
)
from maskrcnn.data.coco_keypoints import KeypointChecker, keypoint_schema
from maskrcnn.data.images import DEFAULT_MAX_IMAGE_PIXELS, load_image, to_image_tensor

__all__ = ["AnnotationWarning", "BadImageWarning", "CocoDataset", "ImageRecord", "Instance", "collate"]


class BadImageWarning(UserWarning):
    """An image file was missing or unreadable and its sample was skipped."""


class CocoDataset(Dataset):
    """Samples `(image, target)` from a COCO instance-segmentation annotation file.

    image: (C, H, W) float32 in [0, 1], the model's input: the file's pixels (`load_image`)
    normalized as `input_config` says (`to_image_tensor`; pass the model's `config.input`, so
    that training, eval and predict see the same values). target: `boxes` (G, 4) float32 xyxy
    pixels, `labels` (G,) int64 in 1..K, `masks` (G, H, W) uint8 in {0, 1}, `image_id` int,
    `file_name` str; G may be 0. With `keypoints=True` also `keypoints` (G, K, 3) float32
    [x, y, v] in the same pixels as the boxes (v as COCO: 0 not labelled, with x = y = 0; 1
    labelled but not visible; 2 visible; instances of categories without keypoints have all
    zeros). `transform(image, target, generator)` (see data.transforms) runs last.

    keypoints: read the file's keypoints; it must have a category with "keypoints" (names), and
    all such categories the same ones. `keypoint_names` (K,), `keypoint_skeleton` (1-based
    pairs) and `keypoint_flip` (K,) (the index each keypoint becomes in a mirrored image, for
    `RandomHorizontalFlip`) describe them; all three are empty without keypoints.

    Index with `dataset[i]` or `dataset[(i, seed)]`: with a seed, the transform's random choices
    come from a generator seeded by (i, seed) alone, so an epoch can be replayed exactly in any
    worker process. Without one they come from a generator seeded from torch's global generator.

    drop_images_without_annotations: leave out images that have no usable instance (none at all,
    only crowd regions, or only dropped ones). skip_bad_images: a missing or undecodable image
    gives None (and one BadImageWarning per file) instead of a ValueError; `collate` drops them.
    max_image_pixels: files whose header claims more pixels are refused (data.max_image_pixels).
    masks: False for a model without a mask head: annotations without a segmentation are kept
    by their boxes instead of dropped.
    """

    def __init__(
        self,
        annotation_file,
        image_dir,
        *,
        transform=None,
        drop_images_without_annotations: bool = False,
        skip_bad_images: bool = False,
        input_config: InputConfig | None = None,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        keypoints: bool = False,
        masks: bool = True,
    ):
        self.annotation_file = str(annotation_file)
        self.image_dir = Path(image_dir)
        self.transform = transform
        self.skip_bad_images = skip_bad_images
        self.input_config = input_config if input_config is not None else InputConfig()
        check_input_config(self.input_config)
        self.max_image_pixels = max_image_pixels
        self._warned_files: set[str] = set()
        # index -> (pixels as decoded, target), filled by data.image_cache.fill_image_cache
        self.image_cache: dict[int, tuple[Tensor, dict]] = {}

        data = read_json(self.annotation_file)
        categories = list_field(data, "categories", self.annotation_file)
        images = list_field(data, "images", self.annotation_file)
        annotations = list_field(data, "annotations", self.annotation_file)

        names = category_names(categories, self.annotation_file)
        self.category_ids: tuple[int, ...] = tuple(sorted(names))
        self.class_names: tuple[str, ...] = ("__background__",) + tuple(names[i] for i in self.category_ids)
        self.num_classes = len(self.class_names)
        label_of = {category_id: label for label, category_id in enumerate(self.category_ids, start=1)}

        self.keypoint_names: tuple[str, ...] = ()
        self.keypoint_skeleton: tuple[tuple[int, int], ...] = ()
        self.keypoint_flip: tuple[int, ...] = ()
        self.keypoint_category_ids: tuple[int, ...] = ()  # the categories that have keypoints
        keypoint_checker = None
        if keypoints:
            schema = keypoint_schema(categories, self.annotation_file)
            if schema is None:
                raise ValueError(
                    f"{self.annotation_file}: no category has 'keypoints' (the names of its keypoints), "
                    "which a keypoint model (model.keypoints) learns and is scored on"
                )
            self.keypoint_names, self.keypoint_skeleton = schema.names, schema.skeleton
            self.keypoint_flip = schema.flip
            self.keypoint_category_ids = tuple(sorted(schema.category_ids))
            keypoint_checker = KeypointChecker(schema)

        sizes = image_entries(images, self.annotation_file)
        checker = AnnotationChecker(label_of, sizes, keypoint_checker, boxes_only=not masks)
        kept = checker.sort(annotations)  # image id -> (instances, crowd regions)
        self.drop_summary = checker.summary()  # what was dropped or kept by its box, and why
        self.records: list[ImageRecord] = [
            ImageRecord(image_id, file_name, height, width, tuple(instances), tuple(crowd))
            for image_id, (file_name, height, width) in sizes.items()
            for instances, crowd in [kept[image_id]]
            if instances or not drop_images_without_annotations
        ]
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

    @property
    def has_keypoints(self) -> bool:
        """Read with keypoints: the targets have `keypoints` and the records their instances'."""
        return bool(self.keypoint_names)

    def label_to_category_id(self, label: int) -> int:
        """A contiguous label 1..K -> the category id used in the annotation file."""
        if not 1 <= label < self.num_classes:
            raise ValueError(f"label {label} is not a class of this dataset (1..{self.num_classes - 1})")
        return self.category_ids[label - 1]

    def __getitem__(self, item):
        index, seed = item if isinstance(item, tuple) else (item, None)
        index = range(len(self.records))[index]
        sample = self.load(index)
        if sample is None or self.transform is None:
            return sample
        return self.transform(*sample, _generator(index, seed))

    def load(self, index: int) -> "tuple[Tensor, dict] | None":
        """Image `index` and its target before the transform (from the cache when it holds
        them); None for a bad image under skip_bad_images."""
        record = self.records[index]
        path = self.image_dir / record.file_name
        cached = self.image_cache.get(index)
        try:
            if cached is not None:  # decoded once (data/image_cache.py)
                pixels, target = cached[0].numpy(), {k: _copy(v) for k, v in cached[1].items()}
            else:
                pixels, target = load_image(path, self.max_image_pixels), None
                self.check_size(pixels, record, path)
            image = to_image_tensor(pixels, self.input_config, str(path))
        except ValueError as error:
            if not self.skip_bad_images:
                raise
            if str(path) not in self._warned_files:
                self._warned_files.add(str(path))
                warnings.warn(f"skipping image: {error}", BadImageWarning, stacklevel=2)
            return None
        return image, target if target is not None else self.target(index)

    def target(self, index: int) -> dict:
        """The annotations of image `index` as tensors (see the class docstring)."""
        return _target(self.records[index], len(self.keypoint_names))

    def check_size(self, pixels: np.ndarray, record: ImageRecord, path) -> None:
        """A decoded (H, W) or (H, W, C) image must have the size its annotations were drawn on."""
        if tuple(pixels.shape[:2]) != (record.height, record.width):
            raise ValueError(
                f"{path}: image is {pixels.shape[1]}x{pixels.shape[0]} pixels but "
                f"{self.annotation_file} says {record.width}x{record.height}"
            )


def _copy(value):
    # A sample is the caller's to change: the cache keeps its own tensors.
    return value.clone() if torch.is_tensor(value) else value


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


def _target(record: ImageRecord, num_keypoints: int = 0) -> dict:
    """num_keypoints: K of the dataset's keypoints; 0 leaves them out of the target."""
    height, width = record.height, record.width
    instances = record.instances
    if instances:
        rles = [to_rle(instance.segmentation, height, width) for instance in instances]
        # decode gives (H, W, G) in Fortran order; one copy makes it (G, H, W) contiguous.
        masks = torch.from_numpy(np.ascontiguousarray(decode_rles(rles).transpose(2, 0, 1)))
    else:
        masks = torch.zeros((0, height, width), dtype=torch.uint8)
    target = {
        "boxes": torch.tensor([i.box for i in instances], dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor([i.label for i in instances], dtype=torch.int64),
        "masks": masks,
        "image_id": record.image_id,
        "file_name": record.file_name,
    }
    if num_keypoints:
        points = [i.keypoints for i in instances]
        target["keypoints"] = torch.tensor(points, dtype=torch.float32).reshape(-1, num_keypoints, 3)
    return target
