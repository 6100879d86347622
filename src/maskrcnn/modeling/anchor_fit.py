"""Anchor sizes fitted to the training boxes (`model.anchors.sizes: auto`), and how well a set
of anchors covers them.

A box is covered when an anchor overlaps it with IoU >= 0.5. Anchors sit on a grid (each
level's stride apart), so a box's centre is up to half a stride from the nearest anchor
centre: coverage is averaged over centre offsets of 0, 1/4 and 1/2 of the stride in x and in y,
which tells an anchor too small for its level's grid from one that fits. Boxes are measured at
the size the model sees them at test time (model.input's resize): the anchors must fit what
the RPN is scored on. The fit scales the configured sizes, all by one factor from a grid of
quarter octaves (FPN levels stay an octave apart, each on its level), keeping the factor
closest to 1 among those within half a percent of the best coverage.
"""

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from maskrcnn.data.transforms import resized_size

COVERED_IOU = 0.5
POOR_COVERAGE = 0.9  # fixed anchors covering fewer boxes are warned about
SMALL_OBJECT = 16  # pixels: a median box side under this gets a note on the input size
FACTORS = [2.0 ** (k / 4) for k in range(-24, 13)]  # 1/64 to 8 in quarter octaves
TIE = 0.005
OFFSETS = (0.0, 0.25, 0.5)  # of the stride, in x and in y
MAX_BOXES = 20_000  # a larger set is measured on this many boxes drawn from it (seed 0)


def anchor_strides(backbone_kind: str, sizes: Sequence[int]) -> tuple[int, ...]:
    """The grid spacing of each size's anchors: FPN's P2-P6 (4-64, one size per level), C4's
    stride 16 or C5's 32 for every size."""
    if backbone_kind == "fpn":
        return tuple(4 * 2**level for level in range(len(sizes)))
    return (16 if backbone_kind == "c4" else 32,) * len(sizes)


def box_sizes(records, min_size: int, max_size: int) -> Tensor:
    """(N, 2) width and height of every instance's box in `records` (data.coco ImageRecord),
    in the pixels of the image resized as the model resizes it at test time; at most
    MAX_BOXES of them, drawn at random (seed 0) from a larger set."""
    sides, scales = [], []
    for record in records:
        if record.instances:
            new = resized_size((record.height, record.width), min_size, max_size).tolist()
            scale = (new[1] / record.width, new[0] / record.height)
            for instance in record.instances:
                x1, y1, x2, y2 = instance.box
                sides.append((x2 - x1, y2 - y1))
                scales.append(scale)
    if not sides:
        return torch.zeros((0, 2))
    boxes = torch.tensor(sides, dtype=torch.float32) * torch.tensor(scales, dtype=torch.float32)
    if len(boxes) > MAX_BOXES:
        boxes = boxes[torch.randperm(len(boxes), generator=torch.Generator().manual_seed(0))[:MAX_BOXES]]
    return boxes


def anchor_shapes(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> Tensor:
    """(A, 2) width and height of each anchor: size ** 2 area, height / width = ratio."""
    return torch.tensor(
        [[size / math.sqrt(ratio), size * math.sqrt(ratio)] for size in sizes for ratio in aspect_ratios],
        dtype=torch.float32,
    )


def coverage(
    boxes: Tensor,
    sizes: Sequence[float],
    aspect_ratios: Sequence[float],
    strides: Sequence[int] | None = None,
    iou: float = COVERED_IOU,
) -> float:
    """Share of boxes (N, 2) with an anchor at IoU >= iou, averaged over the centre offsets
    OFFSETS x OFFSETS of each anchor's stride (strides None: anchors centred on the boxes)."""
    if len(boxes) == 0:
        return 1.0
    anchors = anchor_shapes(sizes, aspect_ratios)  # (A, 2)
    stride = torch.tensor(
        [float(s) for s in (strides or [0] * len(sizes)) for _ in aspect_ratios], dtype=torch.float32
    )
    offsets = OFFSETS if strides else (0.0,)
    area = boxes.prod(dim=-1)[:, None] + anchors.prod(dim=-1)[None]  # (N, A)
    covered = torch.zeros(len(boxes))
    for fx in offsets:
        for fy in offsets:
            shift = torch.stack((fx * stride, fy * stride), dim=-1)  # (A, 2)
            overlap = _overlap(boxes[:, None], anchors[None], shift[None])  # (N, A, 2)
            inter = overlap.prod(dim=-1)
            best = (inter / (area - inter).clamp(min=1e-9)).max(dim=1).values
            covered += (best >= iou).float()
    return float(covered.mean()) / len(offsets) ** 2


def _overlap(box: Tensor, anchor: Tensor, shift: Tensor) -> Tensor:
    """Per-axis overlap of a box centred at 0 and an anchor centred at `shift` (widths, heights)."""
    high = torch.minimum(box / 2, shift + anchor / 2)
    low = torch.maximum(-box / 2, shift - anchor / 2)
    return (high - low).clamp(min=0)


def fit_anchor_sizes(
    boxes: Tensor, sizes: Sequence[int], aspect_ratios: Sequence[float], strides: Sequence[int] | None = None
) -> tuple[tuple[int, ...], float, float]:
    """The configured `sizes` scaled by the factor that covers most `boxes` (N, 2).

    Returns (fitted sizes, coverage of the configured sizes, coverage of the fitted ones).
    """
    before = coverage(boxes, sizes, aspect_ratios, strides)
    scored = []
    for factor in FACTORS:
        # the smallest size rounded, the others kept at their ratios to it (octaves stay octaves)
        first = max(1, round(sizes[0] * factor))
        scaled = tuple(max(1, round(first * size / sizes[0])) for size in sizes)
        scored.append((coverage(boxes, scaled, aspect_ratios, strides), factor, scaled))
    best = max(score for score, _, _ in scored)
    if before >= best - TIE:
        return tuple(int(s) for s in sizes), before, before
    after, _, fitted = min(
        (entry for entry in scored if entry[0] >= best - TIE), key=lambda entry: abs(math.log(entry[1]))
    )
    return fitted, before, after


def small_object_note(boxes: Tensor, min_size: int) -> str | None:
    """A note when the median box is under SMALL_OBJECT pixels a side at the test-time size."""
    if len(boxes) == 0:
        return None
    side = float(boxes.prod(dim=-1).sqrt().median())
    if side >= SMALL_OBJECT:
        return None
    larger = math.ceil(min_size * 2 * SMALL_OBJECT / max(side, 1.0) / 32) * 32
    return (
        f"the median object is {side:.0f} px a side at model.input.min_size={min_size}: small for "
        f"the RPN's strides (4-64 px); enlarging the images (model.input.min_size and "
        f"data.min_sizes_train around {larger}, with the max sizes) usually helps"
    )
