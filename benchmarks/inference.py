"""Inference time of our Mask R-CNN and torchvision's, same weights, same images, one process.

    python benchmarks/inference.py [--runs 5] [--weights TORCHVISION_FILE] [--quick]

Without --weights both models get the same random weights, drawn so that they produce
detections (see maskrcnn.testing). Every figure is the median of --runs timed runs after
a warm-up. Prints, for an 800x1067 image with 100 detections:
- per stage: ours (float32), torchvision (float32), the speed-up, ours with bfloat16
  autocast, and the stage's floor: its convolution and matrix FLOPs divided by the
  matrix-multiply throughput measured on this machine (float32 and bfloat16);
- end to end: both models in float32, ours in bfloat16, ONNX Runtime on our exported graph,
  with 100 and with 10 detections, and the peak memory each inference adds;
- how time grows with the short side: 512, 800 and 1200 pixels (both models resize to it).
The bfloat16 columns are run on a CPU with bfloat16 instructions (AVX-512 BF16 or AMX), or
with --bf16; elsewhere PyTorch emulates bfloat16 at ~1 GFLOP/s and they show "-".
"""

import argparse
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict

import torch
from timing import machine, median_time, paired_medians
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.detection.roi_heads import maskrcnn_inference

import maskrcnn
from maskrcnn.modeling.weight_cache import inference_pass
from maskrcnn.precision import autocast_context, cpu_has_fast_bfloat16
from maskrcnn.structures import RoIs
from maskrcnn.testing import torchvision_reference_model

STAGES = ("preprocess", "backbone+FPN", "RPN", "box head", "mask head", "paste")


class StageTimer:
    def __init__(self):
        self.times = defaultdict(list)

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        self.times[name].append(time.perf_counter() - start)

    def medians(self) -> dict[str, float]:
        return {name: statistics.median(times[1:]) for name, times in self.times.items()}


class StageFlops:
    """Convolution and matrix-product FLOPs of each stage (other operations are not counted)."""

    def __init__(self):
        self.flops = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        counter = FlopCounterMode(display=False)
        with counter:
            yield
        self.flops[name] = counter.get_total_flops()


@torch.inference_mode()
def our_stages(model: maskrcnn.MaskRCNN, image: torch.Tensor, timer, precision: str = "fp32"):
    """model([image]) split into the paper's stages, each timed."""
    with timer("preprocess"):
        images = model.preprocessor([image])
    with inference_pass(), autocast_context(precision, image.device):
        with timer("backbone+FPN"):
            features = model.backbone(images.tensor)
        with timer("RPN"):
            proposals = model.rpn.predict(model.rpn(features, images.padded_size), images.image_sizes)
        heads = model.roi_heads
        box_head = heads.box_head
        with timer("box head"):
            rois = RoIs.from_boxes(proposals)
            raw = box_head(box_head.pool(features, rois), rois)
            (detection,) = box_head.predict(raw, rois, images.image_sizes)
        with timer("mask head"):
            mask_head = heads.mask_head
            rois = RoIs.from_boxes([detection.boxes], [detection.labels])
            detection.outputs.update(mask_head.predict(mask_head(mask_head.pool(features, rois), rois), rois))
    with timer("paste"):
        return model.postprocess(detection, images.image_sizes[0], image)


@torch.inference_mode()
def torchvision_stages(model, image: torch.Tensor, timer):
    """torchvision's model([image]) split into the same stages."""
    with timer("preprocess"):
        images, _ = model.transform([image])
    with timer("backbone+FPN"):
        features = model.backbone(images.tensors)
    with timer("RPN"):
        proposals, _ = model.rpn(images, features)
    heads = model.roi_heads
    with timer("box head"):
        pooled = heads.box_roi_pool(features, proposals, images.image_sizes)
        class_logits, deltas = heads.box_predictor(heads.box_head(pooled))
        boxes, scores, labels = heads.postprocess_detections(
            class_logits, deltas, proposals, images.image_sizes
        )
    with timer("mask head"):
        pooled = heads.mask_roi_pool(features, boxes, images.image_sizes)
        probs = maskrcnn_inference(heads.mask_predictor(heads.mask_head(pooled)), labels)
    with timer("paste"):
        result = [{"boxes": boxes[0], "scores": scores[0], "labels": labels[0], "masks": probs[0]}]
        return model.transform.postprocess(result, images.image_sizes, [tuple(image.shape[-2:])])


def gemm_throughput(dtype: torch.dtype, size: int = 2048, runs: int = 5) -> float:
    """Measured FLOP/s of a square matrix product: the ceiling for convolutions and fc layers."""
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    return 2 * size**3 / median_time(lambda: a @ b, runs)


def set_input_size(ours, reference, short_side: int) -> None:
    """Both models resize every image to this short side (the long side is not capped)."""
    ours.preprocessor.min_size = short_side
    ours.preprocessor.max_size = 10 * short_side
    reference.transform.min_size = (short_side,)
    reference.transform.max_size = 10 * short_side


def set_detections(ours, reference, count: int) -> None:
    ours.roi_heads.box_head.detections_per_image = count
    reference.roi_heads.detections_per_img = count


def build_models(weights: str | None):
    reference = torchvision_reference_model()
    if weights:
        reference.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return maskrcnn.from_torchvision(reference.state_dict()), reference


def test_image(short_side: int) -> torch.Tensor:
    return torch.rand(3, short_side, round(short_side * 4 / 3), generator=torch.Generator().manual_seed(0))


def peak_memory_child(which: str, weights: str | None) -> None:
    """Print how far the resident memory rises above its level before inference, at its
    peak over two inferences (MiB): activations, workspaces and any weight caches."""
    ours, reference = build_models(weights)
    image = test_image(800)
    model, precision = {
        "ours": (ours, "fp32"),
        "ours-bf16": (ours, "bf16"),
        "torchvision": (reference, None),
    }[which]
    before = resident_mib()
    peak = [before]
    done = threading.Event()

    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], resident_mib())
            time.sleep(0.002)

    poller = threading.Thread(target=poll)
    poller.start()
    with torch.inference_mode():
        for _ in range(2):
            model([image]) if precision is None else model([image], precision)
    done.set()
    poller.join()
    print(json.dumps({"peak_mib": peak[0] - before}))


def resident_mib() -> float:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_memory(which: str, weights: str | None) -> float:
    """Each model in a fresh process: the peak of one process says nothing about another's."""
    command = [sys.executable, __file__, "--memory-child", which] + (
        ["--weights", weights] if weights else []
    )
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])["peak_mib"]


def onnx_sessions(ours) -> dict | None:
    """ONNX Runtime sessions of our exported model with 100 and with 10 detections per image."""
    try:
        from maskrcnn.export.onnx import export_onnx, onnx_session
    except ImportError:
        return None
    sessions = {}
    with tempfile.TemporaryDirectory() as folder:
        for count in (100, 10):
            ours.roi_heads.box_head.detections_per_image = count
            sessions[count] = onnx_session(export_onnx(ours, os.path.join(folder, f"model{count}.onnx")))
    return sessions


def run_session(sessions: dict, count: int, image: torch.Tensor):
    from maskrcnn.export.onnx import run_onnx

    return run_onnx(sessions[count], image)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--weights", help="a torchvision maskrcnn_resnet50_fpn state-dict file")
    parser.add_argument(
        "--bf16", action="store_true", help="time bfloat16 even on a CPU without bfloat16 instructions"
    )
    parser.add_argument("--quick", action="store_true", help="stage table and end-to-end rows only")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        peak_memory_child(args.memory_child, args.weights)
        return

    ours, reference = build_models(args.weights)
    image = test_image(800)
    print(f"# Mask R-CNN R50-FPN inference, {machine()}, median of {args.runs} runs")
    # Without bfloat16 instructions PyTorch emulates bfloat16 at ~1 GFLOP/s: an R50
    # inference would take minutes, so those columns are left out unless asked for.
    half = cpu_has_fast_bfloat16() or args.bf16
    fp32_rate = gemm_throughput(torch.float32)
    bf16_rate = gemm_throughput(torch.bfloat16) if half else None
    print(
        f"# matrix-multiply throughput: float32 {fp32_rate / 1e9:.0f} GFLOP/s, bfloat16 "
        + (f"{bf16_rate / 1e9:.0f} GFLOP/s" if half else "not run (no bfloat16 instructions; --bf16 runs it)")
    )

    timers = {"ours": StageTimer(), "torchvision": StageTimer()}
    if half:
        timers["ours bf16"] = StageTimer()
    for _ in range(args.runs + 1):
        our_stages(ours, image, timers["ours"])
        torchvision_stages(reference, image, timers["torchvision"])
        if half:
            our_stages(ours, image, timers["ours bf16"], "bf16")
    flops = StageFlops()
    torchvision_stages(reference, image, flops)
    medians = {name: timer.medians() for name, timer in timers.items()}

    print(f"\n## Stages, 800x1067 image, {len(ours([image])[0]['boxes'])} detections\n")
    print(
        "| stage | ours fp32 (s) | torchvision (s) | speed-up | ours bf16 (s) | GFLOP | "
        "floor fp32 (s) | floor bf16 (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    totals = defaultdict(float)
    for stage in STAGES:
        row = {name: medians[name][stage] for name in medians}
        for name, value in row.items():
            totals[name] += value
        stage_flops = flops.flops.get(stage, 0)
        totals["flops"] += stage_flops
        print(
            f"| {stage} | {row['ours']:.3f} | {row['torchvision']:.3f} | "
            f"{row['torchvision'] / row['ours']:.2f}x | {cell(row.get('ours bf16'))} | "
            f"{stage_flops / 1e9:.0f} | {stage_flops / fp32_rate:.3f} | {cell(stage_flops, bf16_rate)} |"
        )
    print(
        f"| **sum** | {totals['ours']:.3f} | {totals['torchvision']:.3f} | "
        f"{totals['torchvision'] / totals['ours']:.2f}x | {cell(totals.get('ours bf16'))} | "
        f"{totals['flops'] / 1e9:.0f} | {totals['flops'] / fp32_rate:.3f} | "
        f"{cell(totals['flops'], bf16_rate)} |"
    )

    print("\n## End to end, 800x1067 image\n")
    print(
        "| run | 100 detections (s) | 10 detections (s) | vs torchvision fp32 (100 det.) "
        "| peak memory (MiB) |"
    )
    print("|---|---:|---:|---:|---:|")
    rows = defaultdict(dict)
    sessions = onnx_sessions(ours)
    for count in (100, 10):
        set_detections(ours, reference, count)
        runs = {
            "torchvision fp32": functools.partial(reference, [image]),
            "maskrcnn fp32": functools.partial(ours, [image]),
        }
        if half:
            runs["maskrcnn bf16"] = functools.partial(ours, [image], "bf16")
        if sessions is not None:
            runs["maskrcnn ONNX Runtime fp32"] = functools.partial(run_session, sessions, count, image)
        with torch.inference_mode():
            for name, value in paired_medians(runs, args.runs).items():
                rows[name][count] = value
    set_detections(ours, reference, 100)
    memory = {
        "torchvision fp32": "torchvision",
        "maskrcnn fp32": "ours",
        "maskrcnn bf16": "ours-bf16",
    }
    baseline = rows["torchvision fp32"][100]
    if sessions is None:
        print("| maskrcnn ONNX Runtime fp32 | (onnxruntime not installed) | | | |")
    for name, times in rows.items():
        peak = f"{peak_memory(memory[name], args.weights):.0f}" if name in memory and not args.quick else ""
        print(f"| {name} | {times[100]:.3f} | {times[10]:.3f} | {baseline / times[100]:.2f}x | {peak} |")

    if args.quick:
        return
    print("\n## Short side (4:3 images, both models resize to it), 100 detections\n")
    print("| short side | ours fp32 (s) | torchvision (s) | speed-up | ours bf16 (s) |")
    print("|---:|---:|---:|---:|---:|")
    for short_side in (512, 800, 1200):
        set_input_size(ours, reference, short_side)
        batch = [test_image(short_side)]
        runs = {
            "theirs": functools.partial(reference, batch),
            "mine": functools.partial(ours, batch),
        }
        if half:
            runs["half"] = functools.partial(ours, batch, "bf16")
        with torch.inference_mode():
            medians = paired_medians(runs, args.runs)
        theirs, mine, half_time = medians["theirs"], medians["mine"], cell(medians.get("half"))
        print(f"| {short_side} | {mine:.3f} | {theirs:.3f} | {theirs / mine:.2f}x | {half_time} |")


def cell(value: float | None, rate: float | None = 1.0) -> str:
    """A table cell in seconds (value / rate), or "-" for what was not run."""
    return "-" if value is None or rate is None else f"{value / rate:.3f}"


if __name__ == "__main__":
    main()
