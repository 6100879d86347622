"""Ultralytics YOLO segmentation labels as COCO.

`data.yaml` names the dataset's root (`path`, relative to the file's folder), a split's image
folder (`train`, `val`, `test`, relative to the root) and the classes (`names`: a list, or a
dict of index to name). Each image `.../images/<split>/a.jpg` has its labels in
`.../labels/<split>/a.txt` (the last `images` folder of the path read as `labels`), one
instance a line: `class x1 y1 x2 y2 ...`, a polygon in coordinates normalized to [0, 1]. A
line of four numbers, `class cx cy w h`, is a detection without a mask: a box-only instance
(or refused, with `require_masks`), clipped to the image as polygons are. An image without
a label file has no object. Coordinates are normalized by the image's size as displayed (an
EXIF orientation 5 to 8 swaps its stored width and height), the size `train` reads.

A split that names a folder which does not exist, starting with `../`, is looked for without
the `../` in the root, as Ultralytics does: Roboflow's exports write `train: ../train/images`
beside a `train/` folder.
"""

from pathlib import Path

from maskrcnn.data.converters.coco_file import CocoBuilder, header_size
from maskrcnn.data.converters.label_images import IMAGE_SUFFIXES

EPSILON = 1e-6  # coordinates a rounding away from [0, 1] are taken as on the border


def read_data_yaml(path: str, split: str) -> tuple[Path, list[str]]:
    """(the split's image folder, the class names) from a YOLO data.yaml."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read the YAML file ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with path, {split} and names")
    names = data.get("names")
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise ValueError(f"{path}: field 'names' must number the classes 0, 1, 2, ...")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise ValueError(f"{path}: field 'names' must list the class names")
    if split not in data or not isinstance(data[split], str):
        raise ValueError(f"{path}: field {split!r} must name the split's image folder")
    root = Path(data.get("path") or ".")
    root = root if root.is_absolute() else Path(path).parent / root
    return _split_folder(path, split, root, data[split]), [str(name) for name in names]


def _split_folder(path: str, split: str, root: Path, value: str) -> Path:
    """The image folder a split names, relative to the root; a missing `../...` is looked for
    without its `../`, as Ultralytics does."""
    named = folder = root / value
    if not folder.exists() and value.startswith("../"):
        folder = root / value[3:]
    if folder.is_dir():
        return folder
    where = f"{path}: field {split!r}"
    if value.lower().endswith(".txt"):
        raise ValueError(f"{where}: {value} is a list of image files, which is not read: name a folder")
    if folder.exists():
        raise ValueError(f"{where}: {folder} is not a folder")
    if folder == named:
        raise ValueError(f"{where}: folder {folder} does not exist")
    raise ValueError(f"{where}: folder {named} does not exist, nor {folder} (without its '../')")


def labels_folder(images: Path) -> Path:
    """The label folder of an image folder: its last `images` component read as `labels`."""
    parts = list(images.parts)
    if "images" not in parts:
        raise ValueError(f"{images}: a YOLO image folder has 'images' in its path (labels are in 'labels')")
    index = len(parts) - 1 - parts[::-1].index("images")
    parts[index] = "labels"
    return Path(*parts)


def convert_yolo(
    data_yaml: str, split: str = "train", require_masks: bool = False
) -> tuple[CocoBuilder, Path]:
    """(the builder, the image folder its file names are relative to). Raises ValueError naming
    the file and the line for a class index past `names`, a polygon of fewer than 3 points or
    an odd number of coordinates, a coordinate outside [0, 1], a detection line with
    `require_masks`, and a label file without its image."""
    images_dir, names = read_data_yaml(data_yaml, split)
    labels_dir = labels_folder(images_dir)
    builder = CocoBuilder()
    for name in names:
        builder.category(name)
    images = sorted(p for p in images_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    stems = {image.relative_to(images_dir).with_suffix("") for image in images}
    if labels_dir.is_dir():
        for label in sorted(labels_dir.rglob("*.txt")):
            if label.relative_to(labels_dir).with_suffix("") not in stems:
                raise ValueError(f"{label}: no image of this label file in {images_dir}")
    for image in images:
        height, width = header_size(image)
        image_id = builder.add_image(image.relative_to(images_dir).as_posix(), height, width)
        label = labels_dir / image.relative_to(images_dir).with_suffix(".txt")
        if not label.is_file():
            builder.notes["images without a label file (no object)"] += 1
            continue
        for number, line in enumerate(label.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                _add_line(builder, image_id, label, number, line, names, (height, width), require_masks)
    return builder, images_dir


def _add_line(builder, image_id, label: Path, number: int, line: str, names, size, require_masks) -> None:
    where = f"{label}: line {number}"
    fields = line.split()
    try:
        index, values = int(fields[0]), [float(v) for v in fields[1:]]
    except ValueError:
        raise ValueError(f"{where}: expected a class index and numbers, got {line.strip()!r}") from None
    if not 0 <= index < len(names):
        raise ValueError(f"{where}: class {index} is past the {len(names)} names of data.yaml")
    if any(not -EPSILON <= v <= 1 + EPSILON for v in values):
        raise ValueError(f"{where}: coordinates must be normalized to [0, 1]")
    height, width = size
    if len(values) == 4:  # cx cy w h: a detection, no mask
        if require_masks:
            raise ValueError(f"{where}: a box without a polygon (--require-masks)")
        cx, cy, w, h = values
        box = [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]
        if builder.add_box(image_id, names[index], box, "boxes"):
            builder.notes["boxes without a polygon, kept as box-only instances"] += 1
        return
    if len(values) % 2 or len(values) < 6:
        raise ValueError(f"{where}: a polygon needs at least 3 points (x y pairs), got {len(values)} numbers")
    points = [min(max(v, 0.0), 1.0) * (width if i % 2 == 0 else height) for i, v in enumerate(values)]
    builder.add_polygons(image_id, names[index], [points], "polygons")
