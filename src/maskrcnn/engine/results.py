"""Detections as COCO results entries (RLE or polygon masks) and atomic JSON files.

A COCO results file is a list of entries {image_id, category_id, bbox [x, y, w, h], score,
segmentation, and for a keypoint model keypoints [x1, y1, v1, ...]}; pycocotools' `COCO.loadRes`
and `COCOeval` read it. They accept only RLE segmentations, so polygons are for other consumers
(annotation tools, datasets).
"""

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pycocotools.mask as mask_util
import torch

from maskrcnn.files import strict_json, write_text_atomic

# Walking directions around a pixel boundary, clockwise on screen (y points down):
# east, south, west, north. A right turn is +1, a left turn is +3 (mod 4).
_STEPS = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]])


def detections_to_coco(
    image_id: int,
    detections: Mapping,
    category_ids: Mapping[int, int] | Sequence[int] | None = None,
    polygons: bool = False,
) -> list[dict]:
    """One image's detections -> COCO results entries, JSON-serialisable.

    detections: boxes (N, 4) xyxy in image pixels, scores (N,), labels (N,) and optionally
        masks (N, H, W) bool; tensors (any device) or numpy arrays, as `MaskRCNN.predict` returns.
    category_ids: our label index -> the dataset's category id (a dict or a sequence indexed
        by label). None means the labels already are category ids, as for torchvision's COCO
        models, whose 91 outputs follow COCO's id layout.
    polygons: segmentation as a list of flat [x1, y1, x2, y2, ...] polygons (outer
        boundaries, holes filled) instead of RLE. Entries whose mask is empty get [].
    Without masks in `detections` the entries have no segmentation. With keypoints (N, K, 3)
    [x, y, 1] (and keypoint_scores (N, K)) in `detections`, each entry gets `keypoints`
    [x1, y1, 1, ..., xK, yK, 1] (COCO's results format: pycocotools does not read the flags and
    COCO asks for 1) and `keypoint_scores` [s1, ..., sK], each point's heatmap value.
    """
    boxes = _numpy(detections["boxes"]).astype(np.float64).reshape(-1, 4)
    scores = _numpy(detections["scores"]).astype(np.float64).reshape(-1)
    labels = _numpy(detections["labels"]).astype(np.int64).reshape(-1)
    masks = detections.get("masks")
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(
            f"detections: boxes, scores and labels differ in length ({len(boxes)}, {len(scores)}, "
            f"{len(labels)})"
        )
    segmentations = None
    if masks is not None:
        masks = _numpy(masks).astype(bool)
        if masks.ndim != 3 or len(masks) != len(boxes):
            raise ValueError(f"detections: masks must be (N, H, W) with N={len(boxes)}, got {masks.shape}")
        segmentations = [mask_to_polygons(m) for m in masks] if polygons else encode_masks(masks)
    keypoints, keypoint_scores = _keypoints(detections, len(boxes))

    entries = []
    for i, (box, score, label) in enumerate(zip(boxes, scores, labels)):
        x0, y0, x1, y1 = (float(v) for v in box)
        entry = {
            "image_id": int(image_id),
            "category_id": _category_id(int(label), category_ids),
            "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
            "score": round(float(score), 5),
        }
        if segmentations is not None:
            entry["segmentation"] = segmentations[i]
        if keypoints is not None:
            entry["keypoints"] = [v for x, y in keypoints[i].tolist() for v in (round(x, 2), round(y, 2), 1)]
            if keypoint_scores is not None:
                entry["keypoint_scores"] = [round(v, 4) for v in keypoint_scores[i].tolist()]
        entries.append(entry)
    return entries


def _keypoints(detections: Mapping, count: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(N, K, 2) x, y and (N, K) scores of the detections' keypoints (None for what is absent)."""
    keypoints = detections.get("keypoints")
    if keypoints is None:
        return None, None
    keypoints = _numpy(keypoints).astype(np.float64)
    if keypoints.ndim != 3 or len(keypoints) != count or keypoints.shape[2] not in (2, 3):
        raise ValueError(f"detections: keypoints must be (N, K, 3) with N={count}, got {keypoints.shape}")
    scores = detections.get("keypoint_scores")
    if scores is not None:
        scores = _numpy(scores).astype(np.float64)
        if scores.shape != keypoints.shape[:2]:
            raise ValueError(
                f"detections: keypoint_scores must be (N, K) = {keypoints.shape[:2]}, got {scores.shape}"
            )
    return keypoints[:, :, :2], scores


def encode_masks(masks: np.ndarray) -> list[dict]:
    """masks (N, H, W) bool -> N compressed RLEs {"size": [H, W], "counts": str}."""
    if len(masks) == 0:
        return []
    # pycocotools wants (H, W, N) uint8 in Fortran order, i.e. each mask column-major.
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """mask (H, W) bool -> the outer boundary of each of its 8-connected regions.

    Each polygon is a flat [x1, y1, x2, y2, ...] list of at least 4 points running along
    pixel edges (pixel (x, y) covers [x, x + 1] x [y, y + 1]), so its area equals the
    region's pixel count and pycocotools rasterizes it back to the same pixels. Holes are
    filled: COCO polygons cannot express them. Largest polygon first.
    """
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return []
    cols = np.flatnonzero(mask.any(axis=0))
    # Crop to the region and pad with background so every boundary edge lies inside the array.
    padded = np.pad(mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], 1)
    starts, directions = _boundary_edges(padded)
    successors = _successors(starts, directions, padded.shape[1] + 1)
    # Only vertices where the walk turns are polygon corners.
    predecessors = np.empty_like(successors)
    predecessors[successors] = np.arange(len(successors))
    is_corner = directions[predecessors] != directions

    offset = np.array([cols[0] - 1, rows[0] - 1])
    polygons = []
    for loop in _cycles(successors):
        corners = starts[loop[is_corner[loop]]] + offset  # (K, 2) xy, in walking order
        x, y = corners[:, 0], corners[:, 1]
        area = 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))
        if area > 0:  # clockwise on screen: an outer boundary; holes run the other way
            polygons.append((area, corners.astype(np.float64).ravel().tolist()))
    polygons.sort(key=lambda item: -item[0])
    return [polygon for _, polygon in polygons]


def _boundary_edges(padded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel edge between foreground and background, oriented with foreground on the right.

    padded: (H, W) bool with a background border. Returns start vertices (E, 2) xy at pixel
    corners and directions (E,) indexing _STEPS.
    """
    above = np.zeros_like(padded)
    above[1:] = padded[:-1]
    below = np.zeros_like(padded)
    below[:-1] = padded[1:]
    before = np.zeros_like(padded)
    before[:, 1:] = padded[:, :-1]
    after = np.zeros_like(padded)
    after[:, :-1] = padded[:, 1:]
    # (neighbour, direction, start corner relative to the pixel's top-left) for each side.
    sides = [(above, 0, (0, 0)), (after, 1, (1, 0)), (below, 2, (1, 1)), (before, 3, (0, 1))]
    starts, directions = [], []
    for neighbour, direction, (dx, dy) in sides:
        ys, xs = np.nonzero(padded & ~neighbour)
        starts.append(np.stack([xs + dx, ys + dy], axis=1))
        directions.append(np.full(len(xs), direction))
    return np.concatenate(starts), np.concatenate(directions)


def _successors(starts: np.ndarray, directions: np.ndarray, vertices_per_row: int) -> np.ndarray:
    """For each edge (E,), the index of the edge that continues the boundary from its end.

    Where two regions touch only at a corner the end vertex has two outgoing edges; turning
    left keeps them in one boundary (8-connected regions, as in OpenCV's findContours).
    """
    keys = (starts[:, 1] * vertices_per_row + starts[:, 0]) * 4 + directions
    order = np.argsort(keys)
    sorted_keys = keys[order]
    ends = starts + _STEPS[directions]
    end_vertex = ends[:, 1] * vertices_per_row + ends[:, 0]
    successors = np.full(len(starts), -1)
    for turn in (3, 0, 1):  # left, straight, right
        wanted = end_vertex * 4 + (directions + turn) % 4
        position = np.minimum(np.searchsorted(sorted_keys, wanted), len(keys) - 1)
        found = (sorted_keys[position] == wanted) & (successors < 0)
        successors[found] = order[position[found]]
    assert (successors >= 0).all(), "a pixel boundary is always closed"
    return successors


def _cycles(successors: np.ndarray) -> list[np.ndarray]:
    """Split a permutation (E,) into its cycles, each as edge indices in walking order.

    A Python walk, but over boundary edges only (about the perimeter), never over pixels.
    """
    following = successors.tolist()
    visited = [False] * len(following)
    cycles = []
    for start in range(len(following)):
        if visited[start]:
            continue
        cycle = []
        edge = start
        while not visited[edge]:
            visited[edge] = True
            cycle.append(edge)
            edge = following[edge]
        cycles.append(np.array(cycle))
    return cycles


def _category_id(label: int, category_ids) -> int:
    if category_ids is None:
        return label
    try:
        return int(category_ids[label])
    except (KeyError, IndexError):
        raise ValueError(f"label {label} has no entry in category_ids") from None


def _numpy(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def write_json_atomic(obj, path: str | os.PathLike, indent: int | None = None) -> None:
    """Strict JSON (NaN written as null) to `path` atomically: readers never see a half-written file."""
    write_text_atomic(strict_json(obj, indent=indent), path)
