"""Inference time of our Mask R-CNN and torchvision's, same weights, same image, one process.

    python benchmarks/inference.py [--runs 5] [--size 800 1067] [--weights TORCHVISION_FILE]

Without --weights both models get the same random weights, drawn so that they produce
detections (see maskrcnn.testing). Prints the median of --runs timed runs after a warm-up,
the ratio, and our time per stage.
"""

import argparse
import contextlib
import os
import platform
import statistics
import time
from collections import defaultdict

import torch

import maskrcnn
from maskrcnn.modeling.mask_head import select_class_masks
from maskrcnn.structures import Detections
from maskrcnn.testing import torchvision_reference_model


class StageTimer:
    def __init__(self):
        self.times = defaultdict(list)

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        self.times[name].append(time.perf_counter() - start)


@torch.inference_mode()
def staged_forward(model: maskrcnn.MaskRCNN, image: torch.Tensor, timer: StageTimer):
    """model([image]) split into the paper's stages, each timed."""
    with timer("preprocess"):
        images = model.preprocessor([image])
    with timer("backbone+FPN"):
        pyramid = model.features(images.tensor)
    with timer("RPN"):
        proposals = model.rpn.predict(model.rpn(pyramid, images.padded_size), images.image_sizes)
    heads = model.roi_heads
    features = pyramid[:-1]
    with timer("box head"):
        class_logits, deltas = heads.box_predictor(heads.box_head(heads.box_pooler(features, proposals)))
        boxes, scores, labels = heads.box_inference(class_logits, deltas, proposals, images.image_sizes)[0]
    with timer("mask head"):
        mask_logits = heads.mask_head(heads.mask_pooler(features, [boxes]))
        detection = Detections(boxes, scores, labels, select_class_masks(mask_logits, labels))
    with timer("paste"):
        return model.postprocess(detection, images.image_sizes[0], tuple(image.shape[-2:]))


def median_time(function, runs: int) -> float:
    function()  # warm-up: first-call allocations and kernel selection
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, nargs=2, default=(800, 1067), metavar=("H", "W"))
    parser.add_argument("--weights", help="a torchvision maskrcnn_resnet50_fpn state-dict file")
    args = parser.parse_args()

    reference = torchvision_reference_model()
    if args.weights:
        reference.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    ours = maskrcnn.from_torchvision(reference.state_dict())
    image = torch.rand(3, *args.size, generator=torch.Generator().manual_seed(0))

    with torch.inference_mode():
        reference_time = median_time(lambda: reference([image]), args.runs)
        our_time = median_time(lambda: ours([image]), args.runs)
        detections = len(ours([image])[0]["boxes"])
    timer = StageTimer()
    for _ in range(args.runs + 1):
        staged_forward(ours, image, timer)

    print(f"# Mask R-CNN R50-FPN inference, {args.size[0]}x{args.size[1]} image, {detections} detections")
    print(
        f"# {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"median of {args.runs} runs"
    )
    print(f"| {'stage':<14} | {'ours (s)':>9} |")
    print(f"|{'-' * 16}|{'-' * 11}|")
    for name, times in timer.times.items():
        print(f"| {name:<14} | {statistics.median(times[1:]):>9.3f} |")
    print()
    print(f"| {'model':<14} | {'total (s)':>9} |")
    print(f"|{'-' * 16}|{'-' * 11}|")
    print(f"| {'torchvision':<14} | {reference_time:>9.3f} |")
    print(f"| {'maskrcnn':<14} | {our_time:>9.3f} |")
    print(f"\nspeed-up over torchvision: {reference_time / our_time:.2f}x")


if __name__ == "__main__":
    main()
