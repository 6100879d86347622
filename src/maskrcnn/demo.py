"""`make demo`: the inference path end to end on generated images.

Until the training and evaluation commands exist, the model has randomly initialised
weights, so its detections show that every stage runs, not what a trained model finds.
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from maskrcnn import ModelConfig, build_model
from maskrcnn.cli import main as cli_main
from maskrcnn.config import InputConfig, RoIHeadsConfig
from maskrcnn.engine.checkpoint import save_checkpoint

OUT = Path("runs/demo")


def draw_shapes_image(seed: int, size: tuple[int, int] = (240, 320)) -> Image.Image:
    """A noisy background with a few random circles, squares and triangles."""
    rng = np.random.default_rng(seed)
    height, width = size
    background = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8) + rng.integers(0, 120)
    image = Image.fromarray(background.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(2, 5)):
        color = tuple(int(c) for c in rng.integers(80, 256, size=3))
        radius = int(rng.integers(15, 50))
        cx, cy = int(rng.integers(radius, width - radius)), int(rng.integers(radius, height - radius))
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=color)
        elif kind == 1:
            draw.rectangle((cx - radius, cy - radius, cx + radius, cy + radius), fill=color)
        else:
            draw.polygon(
                [(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=color
            )
    return image


def main() -> int:
    started = time.perf_counter()
    images_dir = OUT / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    for index in range(4):
        draw_shapes_image(index).save(images_dir / f"shapes_{index}.png")

    torch.manual_seed(0)
    config = ModelConfig(
        num_classes=4,
        class_names=("__background__", "circle", "square", "triangle"),
        input=InputConfig(min_size=320, max_size=512),
        roi_heads=RoIHeadsConfig(score_threshold=0.0, detections_per_image=10),
    )
    weights = OUT / "random-init.pt"
    save_checkpoint(weights, build_model(config))
    print("maskrcnn demo: ResNet-50-FPN Mask R-CNN with RANDOMLY INITIALISED weights")
    print("(training and evaluation arrive with the training issue; these detections only show the pipeline)")
    code = cli_main(
        [
            "predict",
            str(images_dir),
            "--weights",
            str(weights),
            "--out",
            str(OUT / "predictions"),
            "--score-threshold",
            "0",
        ]
    )
    elapsed = time.perf_counter() - started
    print(f"overlays and predictions.json written to {OUT / 'predictions'} in {elapsed:.1f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
