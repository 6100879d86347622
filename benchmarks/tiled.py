"""Tiled prediction on one large image: time, peak memory, and an overlay to look at.

    python benchmarks/tiled.py --weights runs/shapes/model_final.pt --size 12000 --tile 256
    python benchmarks/tiled.py --weights W --size 2048 --tile 256 --overlay docs/tiled_prediction.png

The image is a mosaic of shapes images (the built-in dataset's drawing, --block px each) of
--size x --size pixels; the tiles cut its shapes anywhere. Prints the CPU, the number of tiles
and detections, the seconds taken, and the process's peak resident memory before and after
(ru_maxrss), so the memory the tiled prediction adds is seen beside the image's own size.
Without --weights the packaged shapes config with random weights is used (time and memory
only: its detections mean nothing).
"""

import argparse
import resource
import time

import numpy as np
import torch
from PIL import Image

from maskrcnn.box_masks import BoxMasks
from maskrcnn.builtin_configs import builtin_configs
from maskrcnn.config import load_config
from maskrcnn.data.shapes import draw_placed_shapes, draw_shapes_image
from maskrcnn.interop.load import load_model
from maskrcnn.modeling.build import build_model
from maskrcnn.modeling.tiling import tile_grid
from maskrcnn.visualize import draw_instances


def mosaic(size: int, block: int, seed: int) -> np.ndarray:
    """(size, size, 3) uint8 made of block x block shapes images."""
    rng = np.random.default_rng(seed)
    image = np.empty((size, size, 3), dtype=np.uint8)
    for y in range(0, size, block):
        for x in range(0, size, block):
            pixels, _ = draw_shapes_image(rng, block, block)
            image[y : y + block, x : x + block] = pixels[: size - y, : size - x]
    return image


def placed(size: int, spacing: int, seed: int) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """(size, size, 3) uint8: one background, a shape every `spacing` pixels (jittered), so the
    tile borders cut shapes anywhere; for pictures (each shape is drawn on a full-size canvas).
    Also returns each shape's (category id, (size, size) bool mask)."""
    rng = np.random.default_rng(seed)
    centres = np.arange(spacing // 2, size, spacing)
    placements = [
        (
            int(rng.integers(1, 4)),
            (x + rng.uniform(-0.15, 0.15) * spacing, y + rng.uniform(-0.15, 0.15) * spacing),
            rng.uniform(0.2, 0.28) * spacing,
        )
        for y in centres
        for x in centres
    ]
    pixels, masks = draw_placed_shapes(rng, size, size, placements)
    return pixels, [(category, mask) for (category, _, _), mask in zip(placements, masks)]


def account(result: dict, shapes: list[tuple[int, np.ndarray]]) -> str:
    """Where each detection went: pairs each with the shape its mask overlaps most (IoU), and
    counts the shapes found once by their class, the extra detections of a found shape (of its
    class: a merge that did not happen; of another class), the detections on no shape (IoU <
    0.5 with every one) and the shapes missed."""
    truth = np.stack([mask for _, mask in shapes]).reshape(len(shapes), -1)
    areas = truth.sum(1)
    found: dict[int, list[int]] = {}
    stray = 0
    for index in range(len(result["scores"])):
        mask = np.asarray(result["masks"][index]).reshape(-1)
        inter = truth[:, mask].sum(1) if mask.any() else np.zeros(len(shapes))
        iou = inter / np.maximum(areas + mask.sum() - inter, 1)
        best = int(iou.argmax())
        if iou[best] < 0.5:
            stray += 1
        else:
            found.setdefault(best, []).append(int(result["labels"][index]))
    right_once = sum(1 for s, labels in found.items() if labels.count(shapes[s][0]) == 1)
    same = sum(max(labels.count(shapes[s][0]) - 1, 0) for s, labels in found.items())
    other = sum(sum(1 for label in labels if label != shapes[s][0]) for s, labels in found.items())
    wrong_only = sum(1 for s, labels in found.items() if shapes[s][0] not in labels)
    return (
        f"{len(shapes)} shapes: {right_once} found once with their class, {wrong_only} found only as "
        f"another class, {len(shapes) - len(found)} missed; {len(result['scores'])} detections: "
        f"{len(found)} shapes' best, {same} more of a found shape's class (merges not made), "
        f"{other - wrong_only} more of another class on a found shape, {stray} on no shape (IoU < 0.5)"
    )


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", help="a trained model (default: the shapes config, random weights)")
    parser.add_argument("--size", type=int, default=12000, help="image side in pixels")
    parser.add_argument(
        "--block",
        type=int,
        default=128,
        help="side of the shapes images the mosaic is made of (objects scale with it)",
    )
    parser.add_argument(
        "--scene",
        choices=("mosaic", "placed"),
        default="mosaic",
        help="mosaic: shapes images side by side (any size); placed: one background with a shape every "
        "--block / 2 pixels (for pictures of a few thousand pixels)",
    )
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--tile-batch", type=int, default=4)
    parser.add_argument("--score-threshold", type=float, default=0.5)
    parser.add_argument(
        "--overlay",
        help="write the image's top-left --overlay-size pixels with their detections and the tile "
        "borders (dotted) here (.jpg or .png)",
    )
    parser.add_argument("--overlay-size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    if args.weights:
        model = load_model(args.weights, device=torch.device("cpu"))
    else:
        torch.manual_seed(0)
        model = build_model(load_config(str(builtin_configs()["shapes"])).model).eval()
    shapes = None
    if args.scene == "mosaic":
        image = mosaic(args.size, args.block, args.seed)
    else:
        image, shapes = placed(args.size, args.block // 2, args.seed)
    before = peak_rss_gb()
    tiles = len(tile_grid(args.size, args.size, args.tile, args.overlap))
    start = time.perf_counter()
    (result,) = model.predict(
        image,
        score_threshold=args.score_threshold,
        tile=args.tile,
        tile_overlap=args.overlap,
        tile_batch=args.tile_batch,
    )
    seconds = time.perf_counter() - start
    after = peak_rss_gb()
    print(f"CPU: {cpu_name()}, {torch.get_num_threads()} threads")
    print(
        f"{args.size}x{args.size} image ({image.nbytes / 2**30:.2f} GiB as uint8), tile {args.tile}, "
        f"overlap {args.overlap}: {tiles} tiles, {len(result['scores'])} detections in {seconds:.1f} s "
        f"({1000 * seconds / tiles:.0f} ms per tile)"
    )
    print(f"peak resident memory: {before:.2f} GiB before predicting, {after:.2f} GiB after")
    if shapes is not None and "masks" in result:
        print(account(result, shapes))
    if args.overlay:
        save_overlay(args, image, result, model.class_names)


def save_overlay(args, image: np.ndarray, result: dict, class_names) -> None:
    """The top-left corner with the detections that start in it and the tile borders."""
    side = min(args.overlay_size, args.size)
    keep = np.flatnonzero((result["boxes"][:, 0] < side) & (result["boxes"][:, 1] < side))
    masks = None
    if "masks" in result:  # each mask cut to the corner (those that start outside it are left out)
        chosen = result["masks"].select(keep)
        inside = np.all(chosen.offsets < side, axis=1)
        keep = keep[inside]
        crops = [
            c[: side - y, : side - x]
            for c, (y, x) in zip(chosen.crops, chosen.offsets)
            if y < side and x < side
        ]
        masks = BoxMasks(crops, chosen.offsets[inside], (side, side))
    picture = draw_instances(
        np.ascontiguousarray(image[:side, :side]),
        result["boxes"][keep],
        result["labels"][keep],
        result["scores"][keep],
        masks,
        class_names,
    )
    pixels = np.asarray(picture).copy()
    for t in tile_grid(args.size, args.size, args.tile, args.overlap):
        for edge in (t.x0, t.x1 - 1):
            if edge < side:
                pixels[0:side:4, edge] = 255  # dotted white lines
        for edge in (t.y0, t.y1 - 1):
            if edge < side:
                pixels[edge, 0:side:4] = 255
    Image.fromarray(pixels).save(args.overlay, quality=88)
    print(f"overlay of the top-left {side}x{side} pixels -> {args.overlay}")


if __name__ == "__main__":
    main()
