"""LabelMe JSON files as COCO.

Each file names its image (`imagePath`, relative to the file's folder; written on Windows with
backslashes, which are read as LabelMe reads them) and its `shapes`: a `label` (the class),
`points` in pixels and a `shape_type`: `polygon` (3 points or more), `rectangle` (two
corners), `circle` (the centre and a point on the circle, drawn as a polygon of CIRCLE_POINTS
points) or `mask` (LabelMe 5.3 on: the two corners of a box, and `mask` a base64 PNG of the
box's pixels, which becomes an exact RLE). Shapes of one `label` and one `group_id` are one
instance in several parts (LabelMe's own key); shapes without a group are an instance each.
Other shape types (lines, points) are skipped and counted, and so are shapes without a pixel
in the image and COCO files in the folder (an earlier conversion's output).

The classes are numbered 1.. in sorted order of their names, so folders with the same classes
converted apart (a training and a validation folder) agree on the ids.
"""

import base64
import binascii
import io
import json
import math
import os
from pathlib import Path, PureWindowsPath

import numpy as np
import pycocotools.mask as mask_utils

from maskrcnn.data.converters.coco_file import CocoBuilder, header_size, polygons_rle

CIRCLE_POINTS = 64
SHAPES = "shapes"  # how skipped shapes are counted in the summary


def convert_labelme(folder: str) -> CocoBuilder:
    """Every LabelMe file of `folder` (not its subfolders), file names relative to it. Raises
    ValueError naming the file (and the shape) for a file without its image, an image of
    another size than `imageWidth` x `imageHeight`, a polygon of fewer than 3 points, a
    rectangle, circle or mask without its 2 points, or a mask that is no one-channel PNG of
    its box's size."""
    folder = Path(folder)
    builder = CocoBuilder()
    files = sorted(p for p in folder.glob("*.json") if p.is_file())
    if not files:
        raise ValueError(f"{folder}: no LabelMe .json file")
    for path in files:
        _add_file(builder, folder, path)
    if not builder.images:
        raise ValueError(f"{folder}: no LabelMe .json file (only COCO files)")
    builder.number_categories_by_name()
    return builder


def _add_file(builder: CocoBuilder, folder: Path, path: Path) -> None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable JSON file ({error})") from None
    if isinstance(data, dict) and "imagePath" not in data and {"images", "annotations"} <= data.keys():
        builder.skipped["COCO files (a conversion's output, not LabelMe)"] += 1
        return
    if not isinstance(data, dict) or not isinstance(data.get("imagePath"), str):
        raise ValueError(f"{path}: not a LabelMe file (no 'imagePath')")
    # LabelMe writes the path with the separator of the system it ran on, and reads it back
    # as a Windows path (PureWindowsPath(...).as_posix()): a POSIX path is left as it is.
    image = path.parent / PureWindowsPath(data["imagePath"]).as_posix()
    if not image.is_file():
        raise ValueError(f"{path}: field 'imagePath': image {image} not found")
    height, width = header_size(image)
    _check_size(path, data, image, height, width)
    file_name = Path(os.path.relpath(image.resolve(), folder.resolve())).as_posix()
    image_id = builder.add_image(file_name, height, width)
    instances: dict = {}  # (label, group), or (index,) for a shape of its own -> (label, its parts)
    for index, shape in enumerate(data.get("shapes") or []):
        where = f"{path}: shape {index}"
        if not isinstance(shape, dict):
            raise ValueError(f"{where}: not a shape (an object with label and points)")
        label, kind = shape.get("label"), shape.get("shape_type") or "polygon"
        if not isinstance(label, str) or not label:
            raise ValueError(f"{where}: no label")
        part = _part(where, kind, shape)
        if part is None:
            builder.skipped[f"{kind} shapes (not an area)"] += 1
            continue
        group = shape.get("group_id")
        # LabelMe's labelme2coco keys an instance by (label, group_id): a group number may be
        # used again in another class (cat 1, dog 1).
        key = (label, group) if group is not None else (index,)
        instances.setdefault(key, (label, []))[1].append(part)
    for label, parts in instances.values():
        _add_instance(builder, image_id, label, parts)


def _check_size(path: Path, data: dict, image: Path, height: int, width: int) -> None:
    """Refuse an image of another size than the one labelled (`imageWidth` x `imageHeight`):
    shapes drawn on it would land elsewhere, or outside this one."""
    labelled = data.get("imageWidth"), data.get("imageHeight")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in labelled):
        return  # not recorded: the image on disk is all there is
    if labelled != (width, height):
        raise ValueError(
            f"{path}: labelled on an image of {labelled[0]} x {labelled[1]} pixels (imageWidth x "
            f"imageHeight), but its image {image} is {width} x {height} as displayed"
        )


def _part(where: str, kind: str, shape: dict):
    """A shape as a flat [x1, y1, ...] polygon in pixels, or for a mask shape ((x, y) of its
    box's corner, its pixels as a bool array); None for a shape of no area (a line)."""
    points = shape.get("points")
    if not isinstance(points, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) for v in p) for p in points
    ):
        raise ValueError(f"{where}: 'points' must be a list of [x, y]")
    if kind == "polygon":
        if len(points) < 3:
            raise ValueError(f"{where}: a polygon needs at least 3 points, got {len(points)}")
        return [float(v) for point in points for v in point]
    if kind in ("rectangle", "circle", "mask") and len(points) != 2:
        raise ValueError(f"{where}: a {kind} has 2 points, got {len(points)}")
    if kind == "rectangle":
        (x1, y1), (x2, y2) = points
        return [float(v) for v in (x1, y1, x2, y1, x2, y2, x1, y2)]
    if kind == "circle":
        (cx, cy), (px, py) = points
        radius = math.hypot(px - cx, py - cy)
        angles = (2 * math.pi * k / CIRCLE_POINTS for k in range(CIRCLE_POINTS))
        return [v for a in angles for v in (cx + radius * math.cos(a), cy + radius * math.sin(a))]
    if kind == "mask":
        return _mask_part(where, points, shape.get("mask"))
    return None


def _mask_part(where: str, points: list, encoded) -> tuple[tuple[int, int], np.ndarray]:
    """A mask shape's corner and pixels. Placed as LabelMe places it (`utils.shapes_to_label`):
    its points truncated to whole pixels, `mask[y1 : y2 + 1, x1 : x2 + 1] = shape["mask"]`,
    the PNG's nonzero pixels set (`img_b64_to_arr(...).astype(bool)`)."""
    from PIL import Image

    if not isinstance(encoded, str) or not encoded:
        raise ValueError(f"{where}: a mask shape needs 'mask', a base64 PNG of its box's pixels")
    try:
        with Image.open(io.BytesIO(base64.b64decode(encoded, validate=True))) as picture:
            pixels = np.array(picture)
    except (OSError, SyntaxError, ValueError, binascii.Error) as error:
        raise ValueError(f"{where}: 'mask' is not a base64 image ({error})") from None
    if pixels.ndim != 2:
        raise ValueError(f"{where}: 'mask' must have one channel, it has shape {pixels.shape}")
    (x1, y1), (x2, y2) = ((int(x), int(y)) for x, y in points)
    if pixels.shape != (y2 - y1 + 1, x2 - x1 + 1):
        raise ValueError(
            f"{where}: 'mask' is {pixels.shape[1]} x {pixels.shape[0]} pixels, but its points "
            f"({x1}, {y1}) to ({x2}, {y2}) span {x2 - x1 + 1} x {y2 - y1 + 1}"
        )
    return (x1, y1), pixels.astype(bool)


def _add_instance(builder: CocoBuilder, image_id: int, label: str, parts: list) -> None:
    """Polygons stay polygons; an instance with a mask part is one exact RLE of all its parts."""
    if all(isinstance(part, list) for part in parts):
        builder.add_polygons(image_id, label, parts, SHAPES)
        return
    height, width = builder.size(image_id)
    mask = np.zeros((height, width), dtype=bool)
    lows, highs = [], []  # each part's extent, to tell why an instance has no pixel
    for part in parts:
        if isinstance(part, list):
            mask |= mask_utils.decode(polygons_rle([part], height, width)).astype(bool)
            lows.append((min(part[0::2]), min(part[1::2])))
            highs.append((max(part[0::2]), max(part[1::2])))
        else:
            (x, y), pixels = part
            _paste(mask, x, y, pixels)
            lows.append((x, y))
            highs.append((x + pixels.shape[1], y + pixels.shape[0]))
    if mask.any():
        builder.add_mask(image_id, label, mask)
    else:
        low, high = np.min(lows, axis=0), np.max(highs, axis=0)
        builder.count_empty(SHAPES, len(parts), low, high, (height, width), "no area: an empty mask")


def _paste(mask: np.ndarray, x: int, y: int, pixels: np.ndarray) -> None:
    """Set the pixels of a box at (x, y) in `mask`, the part of it that lies in the image."""
    top, bottom = max(y, 0), min(y + pixels.shape[0], mask.shape[0])
    left, right = max(x, 0), min(x + pixels.shape[1], mask.shape[1])
    if top < bottom and left < right:
        mask[top:bottom, left:right] |= pixels[top - y : bottom - y, left - x : right - x]
