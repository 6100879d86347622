"""Drawing detections: `visualize.draw_instances` and torchvision's mask drawing.

    python benchmarks/drawing.py [--runs 7] [--masks 50] [--threads 1]

An 800x1333 image with --masks elliptical masks of 40-300 pixels across, as predict and
eval's vis/ draw them. Prints the median time of draw_instances (masks, outlines, boxes and
labels), of its mask tint alone, and of torchvision.utils.draw_segmentation_masks given the
same masks, as they overlap and as the best instance's pixels only (what draw_instances
shows).
"""

import argparse

import numpy as np
import torch
from timing import machine, paired_medians
from torchvision.utils import draw_segmentation_masks

from maskrcnn.visualize import MASK_ALPHA, PALETTE, _tint_masks, _window, draw_instances


def workload(count: int, height: int = 800, width: int = 1333, seed: int = 0):
    """image (H, W, 3) uint8, boxes (N, 4), labels, scores, masks (N, H, W) bool."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    masks = np.zeros((count, height, width), dtype=bool)
    boxes = np.zeros((count, 4), dtype=np.float32)
    rows, cols = np.mgrid[:height, :width]
    for i in range(count):
        h, w = rng.integers(40, 300, 2)
        y0, x0 = rng.integers(0, height - h), rng.integers(0, width - w)
        masks[i] = ((rows - y0 - h / 2) / (h / 2)) ** 2 + ((cols - x0 - w / 2) / (w / 2)) ** 2 <= 1
        boxes[i] = (x0, y0, x0 + w, y0 + h)
    return image, boxes, rng.integers(1, 3, count), rng.uniform(0.05, 1.0, count), masks


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--masks", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image, boxes, labels, scores, masks = workload(args.masks)
    ranked = masks[np.argsort(-scores, kind="stable")]
    colours = PALETTE[np.arange(len(ranked)) % len(PALETTE)]
    tensor_image = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    tensor_masks = torch.from_numpy(ranked)
    colour_list = [tuple(int(c) for c in colour) for colour in colours]

    def tint() -> None:
        _tint_masks(image.copy(), ranked, [_window(mask) for mask in ranked], colours)

    def best_only() -> None:
        owner = torch.where(tensor_masks.any(0), tensor_masks.to(torch.uint8).argmax(0), -1)
        exclusive = owner[None] == torch.arange(len(ranked))[:, None, None]
        draw_segmentation_masks(tensor_image, exclusive, MASK_ALPHA, colour_list)

    times = paired_medians(
        {
            "draw_instances": lambda: draw_instances(image, boxes, labels, scores, masks, ("bg", "a", "b")),
            "its mask tint": tint,
            "draw_segmentation_masks, overlapping masks": lambda: draw_segmentation_masks(
                tensor_image, tensor_masks, MASK_ALPHA, colour_list
            ),
            "draw_segmentation_masks, best instance's pixels": best_only,
        },
        args.runs,
    )
    print(f"# {machine()}")
    print(f"# 800x1333 image, {args.masks} masks, median of {args.runs}")
    for name, seconds in times.items():
        print(f"{name:<48} {seconds:6.3f} s")


if __name__ == "__main__":
    main()
