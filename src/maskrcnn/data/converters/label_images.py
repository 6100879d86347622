"""Instance label images (what CellProfiler, StarDist, Cellpose and napari write) as COCO.

A label image has one integer value per pixel: 0 is background, every other value one
instance (a value in several pieces stays one instance). Each becomes an exact RLE mask.

A label image is matched to the image of the same stem, or of its stem without one of
LABEL_SUFFIXES (`a.tif` for `a.png`, `a_label.png`, `a_masks.tif`, `a_cp_masks.png`), in
the images folder. The labels may lie in the images folder itself (Cellpose's `_cp_masks`
files): there a file with a label suffix is a label image, the others are images.
"""

import csv
from pathlib import Path

import numpy as np

from maskrcnn.choices import IMAGE_EXTENSIONS
from maskrcnn.data.converters.coco_file import CocoBuilder, header_size
from maskrcnn.data.images import TIFF_SUFFIXES, load_image

# The files taken as images: those `predict` reads a folder for.
IMAGE_SUFFIXES = IMAGE_EXTENSIONS

LABEL_FILE_SUFFIXES = (".png", ".tif", ".tiff")
LABEL_SUFFIXES = ("_cp_masks", "_instances", "_labels", "_label", "_masks", "_mask", "_seg")


def image_stem(label: Path) -> tuple[str, bool]:
    """(the stem of the image a label file belongs to, whether its name carried a label suffix)."""
    for suffix in LABEL_SUFFIXES:
        if label.stem.endswith(suffix) and len(label.stem) > len(suffix):
            return label.stem[: -len(suffix)], True
    return label.stem, False


def read_classes(path: str) -> dict[int, str]:
    """A CSV of `label value,class name` rows (a header row of words is skipped)."""
    classes: dict[int, str] = {}
    # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which would glue to the
    # first value and make the first row look like a header.
    with open(path, newline="", encoding="utf-8-sig") as file:
        for number, row in enumerate(csv.reader(file), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 2:
                raise ValueError(f"{path}: line {number}: expected 'label value,class name', got {row}")
            value, name = row[0].strip(), row[1].strip()
            if not value.lstrip("-").isdigit():
                if number == 1:
                    continue  # a header
                raise ValueError(f"{path}: line {number}: label value {value!r} is not a whole number")
            if int(value) <= 0 or not name:
                raise ValueError(f"{path}: line {number}: expected a label value > 0 and a class name")
            classes[int(value)] = name
    if not classes:
        raise ValueError(f"{path}: no 'label value,class name' row")
    return classes


def convert_label_images(
    images_dir: str, labels_dir: str, class_name: str = "object", classes: dict[int, str] | None = None
) -> CocoBuilder:
    """Every label image of `labels_dir` with its image from `images_dir` (file names relative
    to it). Raises ValueError naming the file for a label image without its image, one that
    cannot be read or is not an image of whole numbers, sizes that differ, or a label value
    the class table does not name."""
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    same_folder = images_dir.resolve() == labels_dir.resolve()
    images = {}
    for path in sorted(images_dir.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            if not (same_folder and image_stem(path)[1]):
                images.setdefault(path.stem, path)
    builder = CocoBuilder()
    if classes:
        for value in sorted(classes):
            builder.category(classes[value])
    else:
        builder.category(class_name)
    labelled = set()
    for label in sorted(labels_dir.iterdir()):
        if (
            not label.is_file()
            or label.suffix.lower() not in LABEL_FILE_SUFFIXES
            or label.name.startswith(".")
        ):
            continue
        stem, suffixed = image_stem(label)
        if same_folder and not suffixed:
            continue  # an image of the shared folder
        image = images.get(stem) or images.get(label.stem)
        if image is None:
            raise ValueError(f"{label}: no image {stem}.* in {images_dir} for this label image")
        labelled.add(image.stem)
        _add_label_image(builder, label, image, images_dir, class_name, classes)
    unlabelled = len(set(images) - labelled)
    if unlabelled:
        builder.skipped["images without a label image"] = unlabelled
    return builder


def _add_label_image(builder, label: Path, image: Path, images_dir: Path, class_name, classes) -> None:
    values = _label_values(label)
    if values.ndim != 2:
        raise ValueError(f"{label}: a label image has one channel, this one has shape {values.shape}")
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            raise ValueError(f"{label}: label values must be whole numbers")
        values = values.astype(np.int64)
    elif values.dtype.kind not in "iu":
        raise ValueError(f"{label}: label values must be whole numbers, not {values.dtype}")
    height, width = values.shape
    size = header_size(image)
    if size != (height, width):
        raise ValueError(
            f"{label}: {width} x {height} pixels, but its image {image.name} is {size[1]} x {size[0]}"
        )
    if (values < 0).any():
        raise ValueError(f"{label}: negative label values")
    image_id = builder.add_image(image.relative_to(images_dir).as_posix(), height, width)
    found = np.unique(values)
    for value in found[found > 0]:
        if classes is not None and int(value) not in classes:
            raise ValueError(f"{label}: label value {int(value)} has no class in the class table")
        name = classes[int(value)] if classes is not None else class_name
        builder.add_mask(image_id, name, values == value)


def _label_values(label: Path) -> np.ndarray:
    """A label image's values. A palette (indexed) PNG or TIFF holds the label values as its
    indices (Fiji's LUTs, VOC, labelme's `lblsave`); its colours only show them, so it is not
    read as RGB as `load_image` reads a palette image."""
    if label.suffix.lower() not in TIFF_SUFFIXES:
        from PIL import Image, ImageOps

        try:
            with Image.open(label) as picture:
                if picture.mode == "P":
                    picture.load()
                    return np.array(ImageOps.exif_transpose(picture))  # oriented as the image
        except (OSError, SyntaxError, ValueError):
            pass  # load_image names the file and the problem
    # a TIFF's stored values: a palette or MinIsWhite label TIFF holds the labels as they are
    return load_image(label, max_pixels=0, colours=False)
