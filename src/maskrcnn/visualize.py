"""Drawing detections on an image: tinted masks with outlines, boxes and "name score" labels."""

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

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


def draw_instances(
    image_uint8_hwc: np.ndarray,
    boxes,
    labels,
    scores,
    masks,
    class_names: Sequence[str],
    score_threshold: float = 0.0,
) -> Image.Image:
    """Overlay detections with score >= score_threshold on an image.

    image_uint8_hwc: (H, W, 3) uint8 RGB. boxes: (N, 4) xyxy pixels; labels: (N,) indices
    into class_names; scores: (N,); masks: (N, H, W) bool or None. Tensors or numpy arrays.
    Instances are drawn by descending score, the best on top, and the k-th of them gets
    PALETTE[k % len(PALETTE)], so colours are deterministic and neighbours in rank differ.
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
        masks = _numpy(masks).astype(bool)
        if masks.shape != (len(boxes), height, width):
            raise ValueError(f"masks must be ({len(boxes)}, {height}, {width}), got {masks.shape}")

    keep = np.flatnonzero(scores >= score_threshold)
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    if len(keep) == 0:
        return Image.fromarray(image.copy())
    colours = PALETTE[np.arange(len(keep)) % len(PALETTE)]  # (K, 3)
    dark = colours * OUTLINE_SHADE

    canvas = image.astype(np.float32)
    if masks is not None:
        kept_masks = masks[keep]  # (K, H, W), best first
        _tint_masks(canvas, kept_masks, colours)
        _paint_outlines(canvas, kept_masks, dark)
    result = Image.fromarray(np.clip(canvas + 0.5, 0, 255).astype(np.uint8))

    draw = ImageDraw.Draw(result)
    font = ImageFont.load_default()
    # Draw the weakest first so the best instance's box and label end up on top.
    for rank in reversed(range(len(keep))):
        i = keep[rank]
        x0, y0, x1, y1 = np.clip(boxes[i], 0, [width - 1, height - 1, width - 1, height - 1])
        colour = tuple(int(c) for c in dark[rank])
        draw.rectangle((x0, y0, max(x0, x1), max(y0, y1)), outline=colour, width=BOX_WIDTH)
        text = f"{_class_name(labels[i], class_names)} {scores[i]:.2f}"
        _draw_label(draw, font, text, (x0, y0), tuple(int(c) for c in colours[rank]), (width, height))
    return result


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


def _tint_masks(canvas: np.ndarray, masks: np.ndarray, colours: np.ndarray) -> None:
    """Blend each pixel with the colour of the first (best) mask covering it, in place.

    canvas: (H, W, 3) float; masks: (K, H, W) bool; colours: (K, 3).
    """
    covered = masks.any(axis=0)  # (H, W)
    owner = masks.argmax(axis=0)[covered]  # first True = highest-ranked instance
    canvas[covered] = canvas[covered] * (1 - MASK_ALPHA) + colours[owner] * MASK_ALPHA


def _paint_outlines(canvas: np.ndarray, masks: np.ndarray, colours: np.ndarray) -> None:
    """Paint each mask's 1-pixel inner boundary opaquely in its colour, best on top, in place.

    A boundary pixel is a mask pixel with a 4-neighbour outside the mask (or the image).
    Each mask is handled within its bounding box so memory stays at one crop, not (K, H, W).
    """
    for mask, colour in zip(masks[::-1], colours[::-1]):
        rows = np.flatnonzero(mask.any(axis=1))
        if len(rows) == 0:
            continue
        cols = np.flatnonzero(mask.any(axis=0))
        window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        crop = mask[window]
        padded = np.pad(crop, 1)
        interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        canvas[window][crop & ~interior] = colour


def _draw_label(draw, font, text: str, corner, colour, image_size) -> None:
    """`text` on a filled rectangle of `colour`, above the box corner or, at the top edge, inside."""
    width, height = image_size
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    text_width, text_height = right - left, bottom - top
    pad = 2
    label_width, label_height = text_width + 2 * pad, text_height + 2 * pad
    x = min(max(corner[0], 0), max(width - label_width, 0))
    y = corner[1] - label_height if corner[1] >= label_height else corner[1]
    draw.rectangle((x, y, x + label_width - 1, y + label_height - 1), fill=colour)
    # Black text on light fills and white on dark ones, by perceived luminance.
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    text_colour = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    draw.text((x + pad - left, y + pad - top), text, fill=text_colour, font=font)


def _class_name(label: int, class_names: Sequence[str]) -> str:
    return class_names[label] if 0 <= label < len(class_names) else f"class_{label}"


def _numpy(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)
