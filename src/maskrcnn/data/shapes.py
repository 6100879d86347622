"""The built-in synthetic dataset: circles, squares and triangles on noisy backgrounds, in COCO format.

Each image holds 1-6 shapes of random colour, size, position and rotation, drawn in order so that
later shapes occlude earlier ones. An instance's mask is what stays visible; one that is mostly
hidden is left out of the image altogether, so that every visible shape is annotated. Masks that
are one simple piece are stored as polygons traced along pixel edges (which pycocotools decodes
back to exactly the same pixels), the others as RLE, so both COCO formats get exercised.

Everything is drawn from a numpy Generator seeded by (seed, split, image index): the same seed
gives byte-identical PNGs and JSON, and the validation images do not depend on `num_train`.

With keypoints (`make_shapes(..., keypoints=True)`, `maskrcnn make-shapes --keypoints`) the
same images and masks come with COCO person-keypoints style annotations: every category has the
same four keypoints, the shape's extreme points `KEYPOINT_NAMES` (top, right, bottom, left: its
topmost, rightmost, bottommost and leftmost point; the corners of a square or triangle, where a
triangle's corner may be two of them at once, and where a square whose side is nearly level has
its topmost point on one corner or the next as the tilt goes) and the skeleton
`KEYPOINT_SKELETON` joining them round the shape. Mirroring an image left-right turns the
leftmost point into the rightmost, so the flip map derived from the names (left <-> right) is
exact. A keypoint's flag follows COCO:
- 0 (not labelled, x = y = 0): the point lies outside the image;
- 1 (labelled, not visible): the pixel under the point is painted by a shape drawn later (on
  top), or none of the shape's own visible pixels lies within one pixel of it;
- 2 (visible): otherwise, so a visible point always lies on or within one pixel of its
  instance's visible mask.
Coordinates are the shape's geometric points (pixel (x, y) covers [x, x + 1] x [y, y + 1], as
COCO's), rounded to 0.01 px. Keypoint AP needs OKS sigmas for these four points:
`SHAPES_OKS_SIGMAS` (`model.keypoint_head.oks_sigmas` or `maskrcnn eval --oks-sigmas`).
"""

import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image, ImageDraw

from maskrcnn.data.coco_annotations import decode_rles
from maskrcnn.files import write_text_atomic

CATEGORIES = ({"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 3, "name": "triangle"})
KEYPOINT_NAMES = ("top", "right", "bottom", "left")
KEYPOINT_SKELETON = ((1, 2), (2, 3), (3, 4), (4, 1))  # 1-based, as COCO writes it: round the shape
# No two annotators disagree on these points, so a sigma only says how close is close enough:
# 0.05 (COCO's eyes have 0.025, hips 0.107) gives a point 0.1 x sqrt(area) off (3 px on a
# 30 x 30 shape) an OKS of exp(-1/2) = 0.61.
SHAPES_OKS_SIGMAS = (0.05, 0.05, 0.05, 0.05)
# A shape hidden by more than 40 % is left out: what remains would not tell its class.
MIN_VISIBLE_FRACTION = 0.6
MIN_VISIBLE_PIXELS = 48
_SPLITS = {"train": 0, "val": 1}


def shapes_dataset_paths(out_dir) -> dict[str, Path]:
    """The image folders and annotation files that `make_shapes(out_dir, ...)` writes."""
    out_dir = Path(out_dir)
    return {
        "train_images": out_dir / "train",
        "val_images": out_dir / "val",
        "train_annotations": out_dir / "annotations" / "instances_train.json",
        "val_annotations": out_dir / "annotations" / "instances_val.json",
    }


def make_shapes(
    out_dir,
    num_train: int,
    num_val: int,
    seed: int = 0,
    image_size: tuple[int, int] = (192, 256),
    keypoints: bool = False,
) -> dict[str, Path]:
    """Write the shapes dataset under out_dir and return `shapes_dataset_paths(out_dir)`.

    image_size: (height, width) of every image. Image ids and annotation ids start at 1 per split.
    keypoints: annotate each shape's four extreme points too (see the module's docstring); the
    images and masks are the same as without.
    """
    if num_train < 0 or num_val < 0:
        raise ValueError(f"image counts must be >= 0, got train={num_train}, val={num_val}")
    height, width = image_size
    if min(height, width) < 32:
        raise ValueError(f"image_size must be at least 32x32 pixels, got {image_size}")
    paths = shapes_dataset_paths(out_dir)
    paths["train_annotations"].parent.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", num_train), ("val", num_val)):
        image_dir = paths[f"{split}_images"]
        image_dir.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            rng = np.random.default_rng([seed % 2**64, _SPLITS[split], index])
            pixels, shapes = _draw(rng, height, width)
            image_id, file_name = index + 1, f"{index:06d}.png"
            # Noisy pixels barely compress, so the fastest zlib level costs little space.
            Image.fromarray(pixels).save(image_dir / file_name, compress_level=1)
            images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
            points = _shape_keypoints(shapes, height, width) if keypoints else [None] * len(shapes)
            for shape, flat in zip((s for s in shapes if s.visible is not None), points):
                entry = _annotation(len(annotations) + 1, image_id, shape.category_id, shape.visible)
                if flat is not None:
                    entry["keypoints"] = flat
                    entry["num_keypoints"] = sum(1 for v in flat[2::3] if v > 0)
                annotations.append(entry)
        categories = [dict(c, supercategory="shape") for c in CATEGORIES]
        if keypoints:
            names, skeleton = list(KEYPOINT_NAMES), [list(pair) for pair in KEYPOINT_SKELETON]
            categories = [dict(c, keypoints=names, skeleton=skeleton) for c in categories]
        info = {"description": "maskrcnn synthetic shapes", "seed": seed, "split": split}
        coco = {
            "info": {**info, "keypoints": True} if keypoints else info,
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        write_text_atomic(json.dumps(coco, separators=(",", ":")), paths[f"{split}_annotations"])
    return paths


class _Shape:
    """One drawn shape: its category, whole mask (H, W) bool, colour (3,), extreme points (4, 2)
    (x, y) in KEYPOINT_NAMES order, and visible mask (None when it was left out)."""

    def __init__(self, category_id: int, mask: np.ndarray, colour: np.ndarray, extremes: np.ndarray):
        self.category_id, self.mask, self.colour, self.extremes = category_id, mask, colour, extremes
        self.visible: np.ndarray | None = None


def draw_shapes_image(rng: np.random.Generator, height: int, width: int):
    """One image -> ((H, W, 3) uint8 pixels, [(category_id, (H, W) bool visible mask), ...])."""
    pixels, shapes = _draw(rng, height, width)
    return pixels, [(shape.category_id, shape.visible) for shape in shapes if shape.visible is not None]


def draw_placed_shapes(rng: np.random.Generator, height: int, width: int, placements):
    """An image with shapes where the caller puts them, drawn as the dataset draws its own (for
    large test images: shapes across tile borders, say).

    placements: (category_id, (centre x, centre y), radius) each; they should not overlap.
    Returns ((H, W, 3) uint8 pixels, [(H, W) bool mask per placement]).
    """
    pixels = _background(rng, height, width)
    masks = []
    for category_id, centre, radius in placements:
        mask, _ = _shape_mask(
            category_id,
            np.asarray(centre, dtype=np.float64),
            radius,
            rng.uniform(0, 2 * np.pi),
            rng,
            height,
            width,
        )
        pixels[mask] = _colour(
            rng, pixels[mask].mean(axis=0) if mask.any() else pixels.reshape(-1, 3).mean(0)
        )
        masks.append(mask)
    noise = rng.standard_normal(pixels.shape, dtype=np.float32) * np.float32(5.0)
    return np.clip(pixels + noise, 0, 255).round().astype(np.uint8), masks


def _draw(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, list[_Shape]]:
    """One image -> ((H, W, 3) uint8 pixels, every shape drawn for it, bottom to top, those left
    out with visible None)."""
    background = _background(rng, height, width)
    shapes: list[_Shape] = []  # bottom to top
    centre = None
    for _ in range(int(rng.integers(1, 7))):
        category_id = int(rng.integers(1, 4))
        radius = rng.uniform(0.08, 0.22) * min(height, width)
        # Shapes lie wholly inside the image, so every annotation shows a whole object's outline
        # (less what later shapes occlude).
        margin = 1.35 * radius  # the largest corner distance of any shape
        low, high = [margin, margin], [width - margin, height - margin]
        if centre is not None and rng.random() < 0.5:
            # Next to the previous shape, so that overlaps and occlusion are common.
            centre = np.clip(centre + rng.normal(0, radius, 2), low, high)
        else:
            centre = rng.uniform(low, high)
        angle = rng.uniform(0, 2 * np.pi)
        mask, extremes = _shape_mask(category_id, centre, radius, angle, rng, height, width)
        under = background[mask] if mask.any() else background.reshape(-1, 3)
        shapes.append(_Shape(category_id, mask, _colour(rng, under.mean(axis=0)), extremes))

    pixels = background
    for shape, shown in zip(shapes, _visible_masks([shape.mask for shape in shapes])):
        shape.visible = shown
        if shown is not None:
            pixels[shape.mask] = shape.colour
    noise = rng.standard_normal(pixels.shape, dtype=np.float32) * np.float32(rng.uniform(2.0, 10.0))
    pixels = np.clip(pixels + noise, 0, 255).round().astype(np.uint8)
    return pixels, shapes


def _shape_keypoints(shapes: list[_Shape], height: int, width: int) -> list[list[float]]:
    """The COCO keypoints [x, y, v] * 4 of each shown shape (those with a visible mask), in
    order, flagged as the module's docstring says."""
    result = []
    above = np.zeros((height, width), dtype=bool)  # painted by the shapes drawn later
    for shape in reversed(shapes):
        if shape.visible is None:
            continue
        flat: list[float] = []
        for x, y in np.round(shape.extremes, 2).tolist():
            if not (0 <= x <= width and 0 <= y <= height):
                flat.extend((0.0, 0.0, 0))
                continue
            column, row = min(int(x), width - 1), min(int(y), height - 1)
            near = shape.visible[max(row - 1, 0) : row + 2, max(column - 1, 0) : column + 2].any()
            flat.extend((x, y, 2 if near and not above[row, column] else 1))
        result.append(flat)
        above |= shape.mask
    return result[::-1]


def _visible_masks(full_masks: list[np.ndarray]) -> list[np.ndarray | None]:
    """The visible part of each shape, or None for one hidden too much (which is then not drawn).

    Leaving a shape out uncovers the shapes below it, so this repeats until nothing more is left out.
    """
    kept = [mask.sum() >= MIN_VISIBLE_PIXELS for mask in full_masks]
    while True:
        visible: list[np.ndarray | None] = [None] * len(full_masks)
        covered = np.zeros_like(full_masks[0])
        for i in reversed(range(len(full_masks))):
            if kept[i]:
                visible[i] = full_masks[i] & ~covered
                covered |= full_masks[i]
        hidden = [
            i
            for i, v in enumerate(visible)
            if v is not None
            and (v.sum() < MIN_VISIBLE_PIXELS or v.sum() < MIN_VISIBLE_FRACTION * full_masks[i].sum())
        ]
        if not hidden:
            return visible
        for i in hidden:
            kept[i] = False


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float: a linear gradient between two random colours in a random direction."""
    start, end = rng.uniform(0, 255, (2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width]
    ramp = xs * np.cos(angle) + ys * np.sin(angle)
    ramp = ((ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)).astype(np.float32)
    return (start + ramp[:, :, None] * (end - start)).astype(np.float32)


def _colour(rng: np.random.Generator, avoid: np.ndarray) -> np.ndarray:
    """A random RGB colour, redrawn a few times if too close to the background under the shape."""
    for _ in range(10):
        colour = rng.uniform(0, 255, 3)
        if np.linalg.norm(colour - avoid) > 90:
            break
    return colour


def _shape_mask(category_id, centre, radius, angle, rng, height: int, width: int):
    """(H, W) bool mask of one whole shape (clipped by the image border), and its extreme points
    (4, 2) (x, y): topmost, rightmost, bottommost, leftmost."""
    canvas = Image.new("1", (width, height))
    draw = ImageDraw.Draw(canvas)
    cx, cy = centre
    if category_id == 1:
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=1)
        extremes = np.array([[cx, cy - radius], [cx + radius, cy], [cx, cy + radius], [cx - radius, cy]])
    else:
        # Squares and triangles are rotated; a triangle's corners are jittered so not all are equilateral.
        corners = 4 if category_id == 2 else 3
        angles = angle + 2 * np.pi * np.arange(corners) / corners
        if corners == 3:
            angles = angles + rng.uniform(-0.15, 0.15, 3)
        scale = 1.25 if corners == 4 else 1.35
        vertices = np.array(
            [(cx + scale * radius * np.cos(a), cy + scale * radius * np.sin(a)) for a in angles]
        )
        draw.polygon([tuple(v) for v in vertices.tolist()], fill=1)
        xs, ys = vertices[:, 0], vertices[:, 1]
        extremes = vertices[[np.argmin(ys), np.argmax(xs), np.argmax(ys), np.argmin(xs)]]
    return np.array(canvas, dtype=bool), extremes


def _annotation(annotation_id: int, image_id: int, category_id: int, mask: np.ndarray) -> dict:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    x, y = int(cols[0]), int(rows[0])
    polygon = _outline(mask)
    if polygon is not None:
        segmentation = [polygon]
    else:
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        segmentation = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": segmentation,
        "area": int(mask.sum()),
        "bbox": [x, y, int(cols[-1]) + 1 - x, int(rows[-1]) + 1 - y],
        "iscrowd": 0,
    }


def _outline(mask: np.ndarray) -> list[int] | None:
    """The polygon along the pixel edges around a mask that is one piece without holes, else None.

    Vertices are pixel corners (x, y), so the polygon encloses exactly the mask's pixels; only the
    corners where the outline turns are kept. None when the mask has several pieces or holes
    (their outlines are separate loops), pieces touching only at a corner, or when pycocotools
    would not decode the polygon to the same mask.
    """
    # Working on the mask's bounding box only is several times faster than on the whole image.
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    top, left = int(rows[0]), int(cols[0])
    mask = mask[top : rows[-1] + 1, left : cols[-1] + 1]
    height, width = mask.shape
    padded = np.pad(mask, 1)
    inside = padded[1:-1, 1:-1]
    stride = width + 1  # corner (x, y) has id y * stride + x
    # Directed edges with the mask on their right (y points down): top edges run +x, right
    # edges +y, bottom edges -x, left edges -y, so each outline is one closed walk.
    starts, ends = [], []
    for border, (dx0, dy0), (dx1, dy1) in (
        (~padded[:-2, 1:-1], (0, 0), (1, 0)),  # top
        (~padded[1:-1, 2:], (1, 0), (1, 1)),  # right
        (~padded[2:, 1:-1], (1, 1), (0, 1)),  # bottom
        (~padded[1:-1, :-2], (0, 1), (0, 0)),  # left
    ):
        rows, cols = np.nonzero(inside & border)
        starts.append((rows + dy0) * stride + cols + dx0)
        ends.append((rows + dy1) * stride + cols + dx1)
    starts, ends = np.concatenate(starts), np.concatenate(ends)
    if len(np.unique(starts)) != len(starts):
        return None  # a corner where two outlines meet: pieces touching diagonally
    following = dict(zip(starts.tolist(), ends.tolist()))

    first = int(np.flatnonzero(mask.ravel())[0])
    start = (first // width) * stride + first % width
    loop, corner = [start], following[start]
    while corner != start:
        loop.append(corner)
        corner = following[corner]
    if len(loop) != len(starts):
        return None  # other loops remain: several pieces or holes

    loop = np.array(loop)
    points = np.stack([loop % stride, loop // stride], axis=1)  # (E, 2) x, y
    incoming = points - np.roll(points, 1, axis=0)
    outgoing = np.roll(points, -1, axis=0) - points
    turns = (incoming != outgoing).any(axis=1)
    corners = points[turns]
    decoded = decode_rles(mask_utils.frPyObjects([corners.ravel().tolist()], height, width))[:, :, 0]
    if not np.array_equal(decoded.astype(bool), mask):
        return None
    return (corners + [left, top]).ravel().tolist()
