"""Drawing detections on an image: tinted masks with outlines, boxes and "name score" labels
(the boxes and labels by torchvision.utils.draw_bounding_boxes), and keypoints joined by their
skeleton."""

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.utils import draw_bounding_boxes

from maskrcnn.box_masks import BoxMasks

# Saturated colours that stay distinct next to each other (after Sasha Trubetskoy's list
# of 20 distinct colours, without the pastels, which vanish when tinted onto light images).
PALETTE = np.array(
    [
        (230, 25, 75),  # red
        (60, 180, 75),  # green
        (0, 130, 200),  # blue
        (255, 225, 25),  # yellow
        (145, 30, 180),  # purple
        (245, 130, 48),  # orange
        (70, 240, 240),  # cyan
        (240, 50, 230),  # magenta
        (210, 245, 60),  # lime
        (0, 128, 128),  # teal
        (170, 110, 40),  # brown
        (128, 0, 0),  # maroon
        (128, 128, 0),  # olive
        (0, 0, 128),  # navy
        (128, 128, 128),  # grey
    ],
    dtype=np.float32,
)

MASK_ALPHA = 0.45
OUTLINE_SHADE = 0.6  # outline and box colour = instance colour darkened by this factor
BOX_WIDTH = 2
# A predicted keypoint is drawn when its score, the heatmap's value (a logit) at the point, is
# above this: positive where the head prefers the point to the rest of its RoI (detectron2's
# visualizer draws the same values from 0.05).
KEYPOINT_SCORE_THRESHOLD = 0.0


def draw_instances(
    image_uint8_hwc: np.ndarray,
    boxes,
    labels,
    scores,
    masks,
    class_names: Sequence[str],
    score_threshold: float = 0.0,
    keypoints=None,
    keypoint_scores=None,
    skeleton: Sequence[tuple[int, int]] = (),
    keypoint_threshold: float = KEYPOINT_SCORE_THRESHOLD,
) -> Image.Image:
    """Overlay detections with score >= score_threshold on an image.

    image_uint8_hwc: (H, W, 3) uint8 RGB. boxes: (N, 4) xyxy pixels; labels: (N,) indices
    into class_names; scores: (N,); masks: (N, H, W) bool, `BoxMasks` or None. Tensors or numpy arrays.
    keypoints: (N, K, 3) [x, y, v] in the boxes' pixels (or (N, K, 2)), or None; a point is drawn
    (a dot in its instance's colour) when v > 0 and, with keypoint_scores (N, K), its score is
    above keypoint_threshold; skeleton: 1-based (a, b) pairs of keypoints joined by a line
    where both ends are drawn.
    Instances are drawn by descending score, the best on top, and the k-th of them gets
    PALETTE[k % len(PALETTE)], so colours are deterministic and neighbours in rank differ.
    Each box has its "name score" label inside its top-left corner; keypoints come on top.
    Returns a new RGB image of the same size; with nothing to draw, the image unchanged.
    """
    image = np.asarray(image_uint8_hwc)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    boxes = _numpy(boxes).astype(np.float64).reshape(-1, 4)
    labels = _numpy(labels).astype(np.int64).reshape(-1)
    scores = _numpy(scores).astype(np.float64).reshape(-1)
    if masks is not None:
        masks = masks if isinstance(masks, BoxMasks) else _numpy(masks).astype(bool)
        if tuple(masks.shape) != (len(boxes), height, width):
            raise ValueError(f"masks must be ({len(boxes)}, {height}, {width}), got {masks.shape}")
    shown = None
    if keypoints is not None:
        keypoints, shown = _shown_keypoints(keypoints, keypoint_scores, len(boxes), keypoint_threshold)

    keep = np.flatnonzero(scores >= score_threshold)
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    if len(keep) == 0:
        return Image.fromarray(image.copy())
    colours = PALETTE[np.arange(len(keep)) % len(PALETTE)]  # (K, 3)
    dark = colours * OUTLINE_SHADE

    picture = image.copy()
    if masks is not None:
        crops, windows = _crops(masks, keep)  # best first
        _tint_masks(picture, crops, windows, colours)
        _paint_outlines(picture, crops, windows, _rounded(dark))

    # The weakest first, so that the best instance's box and label end up on top.
    order = keep[::-1]
    corners = np.clip(boxes[order], 0, [width - 1, height - 1, width - 1, height - 1])
    corners[:, 2:] = np.maximum(corners[:, 2:], corners[:, :2])
    fills = [tuple(c) for c in _rounded(colours[::-1]).tolist()]
    drawn = draw_bounding_boxes(
        torch.from_numpy(picture).permute(2, 0, 1),
        torch.from_numpy(corners),
        labels=[f"{_class_name(labels[i], class_names)} {scores[i]:.2f}" for i in order],
        colors=[tuple(c) for c in _rounded(dark[::-1]).tolist()],
        width=BOX_WIDTH,
        fill_labels=True,
        label_colors=[_text_colour(fill) for fill in fills],
        label_background_colors=fills,
    )
    picture = Image.fromarray(drawn.permute(1, 2, 0).numpy())
    if keypoints is not None:
        draw = ImageDraw.Draw(picture)
        # As the boxes: the weakest first, so that the best instance's keypoints end up on top.
        for i, colour in zip(order, fills):
            _draw_keypoints(draw, keypoints[i], shown[i], skeleton, colour, min(height, width))
    return picture


def _shown_keypoints(keypoints, scores, count: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, 2) x, y and (N, K) bool: which points to draw (labelled, finite, above threshold)."""
    keypoints = _numpy(keypoints).astype(np.float64)
    if keypoints.ndim != 3 or len(keypoints) != count or keypoints.shape[2] not in (2, 3):
        raise ValueError(f"keypoints must be ({count}, K, 3), got {keypoints.shape}")
    shown = np.isfinite(keypoints[:, :, :2]).all(axis=2)
    if keypoints.shape[2] == 3:
        shown &= keypoints[:, :, 2] > 0
    if scores is not None:
        scores = _numpy(scores).astype(np.float64)
        if scores.shape != keypoints.shape[:2]:
            raise ValueError(f"keypoint_scores must be {keypoints.shape[:2]}, got {scores.shape}")
        shown &= scores > threshold
    return keypoints[:, :, :2], shown


def _draw_keypoints(draw: ImageDraw.ImageDraw, points: np.ndarray, shown: np.ndarray, skeleton, colour, side):
    """One instance's skeleton lines and keypoint dots, sized to the image's short side.

    points (K, 2) x, y in pixel coordinates (pixel (x, y) covers [x, x + 1] x [y, y + 1]);
    shown (K,) bool; colour an RGB tuple. PIL draws at pixel centres, half a pixel in."""
    radius, width = max(2, round(side / 160)), max(1, round(side / 320))
    centres = points - 0.5
    count = len(points)
    for a, b in skeleton:
        if 1 <= a <= count and 1 <= b <= count and shown[a - 1] and shown[b - 1]:
            draw.line([tuple(centres[a - 1]), tuple(centres[b - 1])], fill=colour, width=width)
    edge = _text_colour(colour)  # a ring that stands out from the instance's own tint
    for x, y in centres[shown].tolist():
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour, outline=edge)


def display_image(image) -> np.ndarray:
    """The model's input image (C, H, W) float in [0, 1] -> (H, W, 3) uint8 RGB to draw on.

    It shows what the model sees (the normalized intensities): 1 channel as gray, 2 as red
    and green (the usual two stains), 3 as RGB, more than 3 by their first three.
    """
    pixels = _numpy(image).astype(np.float32)
    if pixels.ndim != 3 or pixels.shape[0] == 0:
        raise ValueError(f"image must be (C, H, W), got shape {pixels.shape}")
    channels = pixels.shape[0]
    if channels == 1:
        pixels = np.repeat(pixels, 3, axis=0)
    elif channels == 2:
        pixels = np.concatenate([pixels, np.zeros_like(pixels[:1])])
    rgb = pixels[:3].transpose(1, 2, 0)
    return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)


# The masks are tinted here rather than by torchvision.utils.draw_segmentation_masks: on an
# 800x1333 image with 50 masks, that function takes 0.36-0.48 s (0.73-0.93 s given only each
# pixel's best instance) against 0.08 s for `_tint_masks` (benchmarks/drawing.py, 2-core AMD
# EPYC), as it indexes the whole image once per mask; and where masks overlap it darkens the
# pixels (alpha-blends them with black) instead of showing the best instance there.
def _window(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The rows and columns of `mask`'s bounding box (None when the mask is empty)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _crops(masks, keep: np.ndarray) -> tuple[list, list]:
    """The masks at `keep`, each as (its crop, its window (rows, columns) in the image), or
    (None, None) when empty; from (N, H, W) masks or from `BoxMasks`, never a (K, H, W) copy."""
    if isinstance(masks, BoxMasks):
        windows = masks.windows()
        pairs = [(masks.crops[i], windows[i]) if masks.crops[i].any() else (None, None) for i in keep]
    else:
        pairs = []
        for i in keep:
            window = _window(masks[i])
            pairs.append((None, None) if window is None else (masks[i][window], window))
    return [crop for crop, _ in pairs], [window for _, window in pairs]


def _tint_masks(picture: np.ndarray, crops: list, windows: list, colours: np.ndarray) -> None:
    """Blend each pixel with the colour of the first (best) mask covering it, in place.

    picture: (H, W, 3) uint8; crops: K masks, best first, each the (h, w) bool crop of its
    window (None for an empty mask); colours: (K, 3).
    """
    owner = np.full(picture.shape[:2], -1, dtype=np.int32)
    for k in reversed(range(len(crops))):  # the best last: it owns the pixels it shares
        if windows[k] is not None:
            owner[windows[k]][crops[k]] = k
    covered = owner >= 0
    blended = picture[covered].astype(np.float32) * (1 - MASK_ALPHA) + colours[owner[covered]] * MASK_ALPHA
    picture[covered] = _rounded(blended)


def _paint_outlines(picture: np.ndarray, crops: list, windows: list, colours: np.ndarray) -> None:
    """Paint each mask's 1-pixel inner boundary opaquely in its colour, best on top, in place.

    A boundary pixel is a mask pixel with a 4-neighbour outside the mask (or the image).
    Each mask is handled within its window so memory stays at one crop, not (K, H, W).
    """
    for crop, window, colour in zip(crops[::-1], windows[::-1], colours[::-1]):
        if window is None:
            continue
        padded = np.pad(crop, 1)
        interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        picture[window][crop & ~interior] = colour


def _text_colour(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black text on light fills and white on dark ones, by perceived luminance."""
    luminance = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def _rounded(values: np.ndarray) -> np.ndarray:
    return np.clip(values + 0.5, 0, 255).astype(np.uint8)


def _class_name(label: int, class_names: Sequence[str]) -> str:
    return class_names[label] if 0 <= label < len(class_names) else f"class_{label}"


def _numpy(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)
