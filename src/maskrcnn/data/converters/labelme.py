"""LabelMe JSON files as COCO.

Each file names its image (`imagePath`, relative to the file's folder) and its `shapes`: a
`label` (the class), `points` in pixels and a `shape_type`: `polygon` (3 points or more),
`rectangle` (two corners) or `circle` (the centre and a point on the circle, drawn as a
polygon of CIRCLE_POINTS points). Shapes of one `group_id` are one instance in several parts;
shapes without one are an instance each. Other shape types (lines, points) are skipped and
counted, and so are COCO files in the folder (an earlier conversion's output).
"""

import json
import math
from pathlib import Path

from maskrcnn.data.converters.coco_file import CocoBuilder, header_size

CIRCLE_POINTS = 64


def convert_labelme(folder: str) -> CocoBuilder:
    """Every LabelMe file of `folder` (not its subfolders), file names relative to it. Raises
    ValueError naming the file and the shape for a file without its image, a polygon of fewer
    than 3 points, a rectangle or circle without its 2 points, or one group of two labels."""
    folder = Path(folder)
    builder = CocoBuilder()
    files = sorted(p for p in folder.glob("*.json") if p.is_file())
    if not files:
        raise ValueError(f"{folder}: no LabelMe .json file")
    for path in files:
        _add_file(builder, folder, path)
    if not builder.images:
        raise ValueError(f"{folder}: no LabelMe .json file (only COCO files)")
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
    image = (path.parent / data["imagePath"]).resolve()
    if not image.is_file():
        raise ValueError(f"{path}: its image {data['imagePath']} is not in {path.parent}")
    height, width = header_size(image)
    file_name = Path(_relative(image, folder.resolve())).as_posix()
    image_id = builder.add_image(file_name, height, width)
    instances: dict = {}  # (label, group) or a shape's own key -> its polygons
    for index, shape in enumerate(data.get("shapes") or []):
        where = f"{path}: shape {index}"
        label, kind = shape.get("label"), shape.get("shape_type") or "polygon"
        if not isinstance(label, str) or not label:
            raise ValueError(f"{where}: no label")
        polygon = _polygon(where, kind, shape.get("points"))
        if polygon is None:
            builder.skipped[f"{kind} shapes (not an area)"] += 1
            continue
        group = shape.get("group_id")
        key = ("group", group) if group is not None else ("shape", index)
        if key in instances and instances[key][0] != label:
            raise ValueError(f"{where}: group_id {group} joins labels {instances[key][0]!r} and {label!r}")
        instances.setdefault(key, (label, []))[1].append(polygon)
    for label, polygons in instances.values():
        builder.add_polygons(image_id, label, polygons)


def _polygon(where: str, kind: str, points) -> list[float] | None:
    """A shape as a flat [x1, y1, ...] polygon in pixels; None for a shape of no area (a line)."""
    if not isinstance(points, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) for v in p) for p in points
    ):
        raise ValueError(f"{where}: 'points' must be a list of [x, y]")
    if kind == "polygon":
        if len(points) < 3:
            raise ValueError(f"{where}: a polygon needs at least 3 points, got {len(points)}")
        return [float(v) for point in points for v in point]
    if kind in ("rectangle", "circle") and len(points) != 2:
        raise ValueError(f"{where}: a {kind} has 2 points, got {len(points)}")
    if kind == "rectangle":
        (x1, y1), (x2, y2) = points
        return [float(v) for v in (x1, y1, x2, y1, x2, y2, x1, y2)]
    if kind == "circle":
        (cx, cy), (px, py) = points
        radius = math.hypot(px - cx, py - cy)
        angles = (2 * math.pi * k / CIRCLE_POINTS for k in range(CIRCLE_POINTS))
        return [v for a in angles for v in (cx + radius * math.cos(a), cy + radius * math.sin(a))]
    return None


def _relative(path: Path, folder: Path) -> str:
    """`path` relative to `folder` (with .. where it lies beside it)."""
    import os

    return os.path.relpath(path, folder)
