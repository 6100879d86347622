"""Tiled inference: a large image cut into overlapping tiles, each detected as an image of its
own, and the detections put back together.

Why: the model resizes every input so its shorter side is `input.min_size` (800) and its longer
at most `input.max_size` (1333): a 12,000 px aerial tile or slide shrinks ninefold and its small
objects vanish. Cut into tiles about the size of the training images, each object is seen at the
scale the model learnt.

How:
- Tiles of `tile` x `tile` pixels start every `tile - overlap` pixels; the last row and column are
  moved in to end at the image's edge, so every tile is whole (an image side shorter than a tile
  gives one tile of that side). Tiles run in batches of `tile_batch` through the model's usual
  forward (each tile resized as any input of its size would be).
- Each detection keeps its mask as the crop of its window (`BoxMasks`): memory follows the tile
  batch and the detections, not the image.
- An object in the strip two tiles share is seen by both, and one cut by a tile's edge is seen
  whole or in part by each tile that holds it. Two detections of the same class from tiles that
  overlap are one object when their masks agree inside the overlap, the only pixels both tiles
  saw (IoU there >= MATCH_IOU). Matches are joined transitively (an object across four tiles is
  one); each group becomes one detection: the union of its masks, the union of its boxes, the
  best score and the best-scoring member's keypoints. Tiles detect down to half the score
  threshold, and a group is kept when its best score reaches it: a cut piece that scores above
  it joins the whole object its neighbour scored just below (measured: a triangle across a
  border, seen whole under 0.5 and cut at 0.53, came out as its half, mask IoU 0.51; joined, 0.94).
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from maskrcnn import choices
from maskrcnn.box_masks import BoxMasks
from maskrcnn.choices import DEFAULT_TILE_OVERLAP

MATCH_IOU = 0.5  # masks of two tiles inside their overlap: at least this IoU = one object
TILE_THRESHOLD_SHARE = 0.5  # tiles detect down to this share of the score threshold (see below)
DEFAULT_TILE_BATCH = 4


@dataclass(frozen=True)
class Tile:
    """A window of the image: rows y0:y1, columns x0:x1."""

    y0: int
    x0: int
    y1: int
    x1: int

    def intersection(self, other: "Tile") -> "Tile | None":
        y0, x0 = max(self.y0, other.y0), max(self.x0, other.x0)
        y1, x1 = min(self.y1, other.y1), min(self.x1, other.x1)
        return Tile(y0, x0, y1, x1) if y0 < y1 and x0 < x1 else None


def resolved_overlap(tile: int, overlap: int | None) -> int:
    """`overlap`, or when None the default: DEFAULT_TILE_OVERLAP, at most half a tile."""
    return min(DEFAULT_TILE_OVERLAP, tile // 2) if overlap is None else overlap


def check_tiling(tile: int, overlap: int | None) -> None:
    """Raise ValueError naming the value when `tile` / `overlap` cannot tile an image."""
    for name, value in (("tile", tile), ("tile_overlap", overlap)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name} {value!r}: expected a whole number of pixels")
    problem = choices.tiling_problem(tile, overlap)
    if problem:
        raise ValueError(problem)


def tile_grid(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """The tiles covering an (height, width) image, row by row."""
    rows, cols = _starts(height, tile, overlap), _starts(width, tile, overlap)
    return [Tile(y, x, min(y + tile, height), min(x + tile, width)) for y in rows for x in cols]


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    stride = tile - overlap
    count = math.ceil((size - tile) / stride) + 1
    return [min(i * stride, size - tile) for i in range(count)]


@dataclass
class _Piece:
    """One detection of one tile, in image pixels."""

    tile: int
    box: np.ndarray  # (4,) xyxy
    score: float
    label: int
    crop: np.ndarray  # (h, w) bool
    offset: tuple[int, int]  # (y, x) of the crop
    keypoints: np.ndarray | None = None  # (K, 3)
    keypoint_scores: np.ndarray | None = None  # (K,)


def predict_tiled(
    model,
    image: Tensor,
    tile: int,
    overlap: int | None = None,
    precision: str = "fp32",
    score_threshold: float = 0.0,
    tile_batch: int = DEFAULT_TILE_BATCH,
) -> dict:
    """Detect in one large image (C, H, W), float in [0, 1] (the model's input), tile by tile.

    Returns boxes (D, 4) xyxy in the image's pixels, scores (D,), labels (D,) (CPU tensors,
    by descending score) and, as the model's heads give them, masks as `BoxMasks` (D masks of
    (H, W)), keypoints (D, K, 3) and keypoint_scores (D, K). Each tile keeps at most
    `roi_heads.detections_per_image` detections; the image has no cap.
    """
    check_tiling(tile, overlap)
    overlap = resolved_overlap(tile, overlap)
    height, width = image.shape[-2:]
    tiles = tile_grid(height, width, tile, overlap)
    pieces: list[_Piece] = []
    has_masks = False
    # The tile that sees an object whole may score it just under the threshold while the tile
    # that cuts it keeps the cut piece: tiles keep detections down to TILE_THRESHOLD_SHARE of
    # the threshold so that the pieces of one object can join, and the threshold applies to
    # each joined object's best score (else the half would be the answer).
    tile_threshold = score_threshold * TILE_THRESHOLD_SHARE
    for start in range(0, len(tiles), tile_batch):
        batch = tiles[start : start + tile_batch]
        crops = [image[..., t.y0 : t.y1, t.x0 : t.x1].to(model.device) for t in batch]
        for index, result in zip(range(start, start + len(batch)), model(crops, precision, tile_threshold)):
            pieces.extend(_pieces(index, tiles[index], result))
            has_masks = has_masks or "masks" in result
    groups = [g for g in _groups(pieces, tiles) if max(pieces[i].score for i in g) >= score_threshold]
    return _merged(pieces, groups, (height, width), has_masks)


def _pieces(index: int, tile: Tile, result: dict) -> list[_Piece]:
    """A tile's detections in image pixels, each mask cropped to where it has pixels."""
    boxes = result["boxes"].detach().float().cpu().numpy() + [tile.x0, tile.y0, tile.x0, tile.y0]
    scores = result["scores"].detach().float().cpu().numpy()
    labels = result["labels"].cpu().numpy()
    masks = result.get("masks")
    masks = masks.cpu().numpy() if masks is not None else None
    keypoints = result.get("keypoints")
    if keypoints is not None:
        keypoints = keypoints.detach().float().cpu().numpy().copy()
        keypoints[..., :2] += [tile.x0, tile.y0]
    keypoint_scores = result.get("keypoint_scores")
    keypoint_scores = keypoint_scores.detach().float().cpu().numpy() if keypoint_scores is not None else None
    pieces = []
    for i in range(len(boxes)):
        crop, (y, x) = _cropped(masks[i]) if masks is not None else (np.zeros((0, 0), bool), (0, 0))
        pieces.append(
            _Piece(
                index,
                boxes[i],
                float(scores[i]),
                int(labels[i]),
                crop,
                (y + tile.y0, x + tile.x0),
                None if keypoints is None else keypoints[i],
                None if keypoint_scores is None else keypoint_scores[i],
            )
        )
    return pieces


def _cropped(mask: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return np.zeros((0, 0), dtype=bool), (0, 0)
    cols = np.flatnonzero(mask.any(axis=0))
    return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].copy(), (int(rows[0]), int(cols[0]))


def _groups(pieces: list[_Piece], tiles: list[Tile]) -> list[list[int]]:
    """Indices of `pieces` grouped into objects (union-find over matches of overlapping tiles)."""
    parent = list(range(len(pieces)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_tile: dict[int, list[int]] = {}
    for i, piece in enumerate(pieces):
        by_tile.setdefault(piece.tile, []).append(i)
    for a, b in _overlapping_pairs(tiles):
        shared = tiles[a].intersection(tiles[b])
        in_a = [i for i in by_tile.get(a, ()) if _touches(pieces[i], shared)]
        in_b = [j for j in by_tile.get(b, ()) if _touches(pieces[j], shared)]
        for i in in_a:
            for j in in_b:
                same_label = pieces[i].label == pieces[j].label
                if same_label and _overlap_iou(pieces[i], pieces[j], shared) >= MATCH_IOU:
                    parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(pieces)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def _overlapping_pairs(tiles: list[Tile]) -> list[tuple[int, int]]:
    """(a, b), a < b, of the tiles that share pixels. With an overlap of at most half a tile only
    tiles up to two rows or columns apart can (the last row and column are moved in, so they may
    reach past their neighbour): those are all that is checked, not every pair of a large grid."""
    rows = {y: r for r, y in enumerate(sorted({t.y0 for t in tiles}))}
    cols = {x: c for c, x in enumerate(sorted({t.x0 for t in tiles}))}
    at = {(rows[t.y0], cols[t.x0]): i for i, t in enumerate(tiles)}
    pairs = []
    for (row, col), a in at.items():
        for dr in range(0, 3):
            for dc in range(-2, 3):
                b = at.get((row + dr, col + dc))
                if b is not None and b > a and tiles[a].intersection(tiles[b]) is not None:
                    pairs.append((a, b))
    return pairs


def _touches(piece: _Piece, region: Tile) -> bool:
    """Whether the piece's mask window (or, without a mask, its box) reaches into `region`."""
    if piece.crop.size:
        return _window(piece).intersection(region) is not None
    x0, y0, x1, y1 = piece.box
    return x0 < region.x1 and x1 > region.x0 and y0 < region.y1 and y1 > region.y0


def _window(piece: _Piece) -> Tile:
    y, x = piece.offset
    return Tile(y, x, y + piece.crop.shape[0], x + piece.crop.shape[1])


def _pixels(piece: _Piece, region: Tile) -> np.ndarray:
    """The piece's mask within `region` (which lies inside the piece's window)."""
    y, x = piece.offset
    return piece.crop[region.y0 - y : region.y1 - y, region.x0 - x : region.x1 - x]


def _overlap_iou(a: _Piece, b: _Piece, region: Tile) -> float:
    """IoU of two pieces within `region` (of their masks; without masks, of their boxes).
    Only the windows' common part is read, never the whole region."""
    if a.crop.size and b.crop.size:
        in_a, in_b = _window(a).intersection(region), _window(b).intersection(region)
        if in_a is None or in_b is None:
            return 0.0
        common = in_a.intersection(in_b)
        if common is None:
            return 0.0
        inter = np.count_nonzero(_pixels(a, common) & _pixels(b, common))
        union = np.count_nonzero(_pixels(a, in_a)) + np.count_nonzero(_pixels(b, in_b)) - inter
        return inter / union if union else 0.0
    clip = np.array([region.x0, region.y0, region.x1, region.y1], dtype=np.float64)
    first, second = _clipped_box(a.box, clip), _clipped_box(b.box, clip)
    inter = _box_area(np.concatenate([np.maximum(first[:2], second[:2]), np.minimum(first[2:], second[2:])]))
    union = _box_area(first) + _box_area(second) - inter
    return inter / union if union > 0 else 0.0


def _clipped_box(box: np.ndarray, clip: np.ndarray) -> np.ndarray:
    return np.concatenate([np.clip(box[:2], clip[:2], clip[2:]), np.clip(box[2:], clip[:2], clip[2:])])


def _box_area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))


def _merged(
    pieces: list[_Piece], groups: list[list[int]], image_size: tuple[int, int], has_masks: bool
) -> dict:
    """One detection per group, by descending score."""
    merged = [_merge([pieces[i] for i in group]) for group in groups]
    merged.sort(key=lambda p: -p.score)
    result = {
        "boxes": torch.tensor(np.array([p.box for p in merged], dtype=np.float32).reshape(-1, 4)),
        "scores": torch.tensor([p.score for p in merged], dtype=torch.float32),
        "labels": torch.tensor([p.label for p in merged], dtype=torch.int64),
    }
    if has_masks:
        result["masks"] = BoxMasks([p.crop for p in merged], [p.offset for p in merged], image_size)
    if pieces and pieces[0].keypoints is not None:
        result["keypoints"] = torch.tensor(np.stack([p.keypoints for p in merged]), dtype=torch.float32)
        result["keypoint_scores"] = torch.tensor(
            np.stack([p.keypoint_scores for p in merged]), dtype=torch.float32
        )
    return result


def _merge(group: list[_Piece]) -> _Piece:
    best = max(group, key=lambda p: p.score)
    if len(group) == 1:
        return best
    boxes = np.stack([p.box for p in group])
    box = np.concatenate([boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)])
    with_pixels = [p for p in group if p.crop.size]
    if not with_pixels:
        return _Piece(
            best.tile,
            box,
            best.score,
            best.label,
            best.crop,
            best.offset,
            best.keypoints,
            best.keypoint_scores,
        )
    y0 = min(p.offset[0] for p in with_pixels)
    x0 = min(p.offset[1] for p in with_pixels)
    y1 = max(p.offset[0] + p.crop.shape[0] for p in with_pixels)
    x1 = max(p.offset[1] + p.crop.shape[1] for p in with_pixels)
    union = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for p in with_pixels:
        y, x = p.offset[0] - y0, p.offset[1] - x0
        union[y : y + p.crop.shape[0], x : x + p.crop.shape[1]] |= p.crop
    return _Piece(
        best.tile, box, best.score, best.label, union, (y0, x0), best.keypoints, best.keypoint_scores
    )
