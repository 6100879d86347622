"""Training step time of our Mask R-CNN and torchvision's, same weights, same batch, one process.

    python benchmarks/training.py [--runs 5] [--workload r50-800 shapes]

r50-800: ResNet-50-FPN (FrozenBatchNorm, res2 and the stem frozen, as when fine-tuning
from ImageNet), a batch of 2 800x1067 images, the paper's 512 RoIs per image.
shapes: the model of configs/shapes.yaml (GroupNorm trunk, 64-channel FPN and heads, 64
RoIs per image), a batch of 4 shapes images at 208x277; torchvision's Mask R-CNN is built
around a plain copy of the same trunk and FPN with the same anchors, proposal counts,
RoI sampling and heads.
A step is loss, backward and an SGD update (the trainer's fused SGD, for both models); the
median of --runs steps after a warm-up, the three variants taking turns so that a slow
spell of the machine falls on all alike.
Ours runs in float32 and, like `solver.precision: bf16`, under bfloat16 autocast (on a CPU
with bfloat16 instructions, or with --bf16).
"""

import argparse
import copy
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from timing import machine, paired_medians
from torch import nn
from torchvision.models.detection import MaskRCNN as TorchvisionMaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.resnet import resnet50
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

import maskrcnn
from maskrcnn.config import SolverConfig, load_config
from maskrcnn.data.shapes import draw_shapes_image
from maskrcnn.engine.optimizer import make_optimizer
from maskrcnn.precision import autocast_context, cpu_has_fast_bfloat16

ROOT = Path(__file__).resolve().parents[1]


def shapes_batch(count: int, height: int, width: int, seed: int = 0):
    """count shapes images (3, H, W) in [0, 1] and their targets."""
    rng = np.random.default_rng(seed)
    images, targets = [], []
    for _ in range(count):
        pixels, instances = draw_shapes_image(rng, height, width)
        masks = torch.from_numpy(np.stack([m for _, m in instances])).to(torch.uint8)
        ys, xs = [], []
        for mask in masks:
            rows, cols = torch.where(mask > 0)
            ys.append((rows.min(), rows.max() + 1))
            xs.append((cols.min(), cols.max() + 1))
        boxes = torch.tensor([[x[0], y[0], x[1], y[1]] for x, y in zip(xs, ys)], dtype=torch.float32)
        labels = torch.tensor([c for c, _ in instances], dtype=torch.int64)
        images.append(torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
        targets.append({"boxes": boxes, "labels": labels, "masks": masks})
    return images, targets


class PlainBackbone(nn.Module):
    """Our trunk and FPN in torchvision's backbone interface, in the default memory layout."""

    def __init__(self, model: maskrcnn.MaskRCNN):
        super().__init__()
        self.backbone = copy.deepcopy(model.backbone).to(memory_format=torch.contiguous_format)
        self.out_channels = next(iter(model.backbone.output_shape().values())).channels

    def forward(self, x):
        # trunk and pyramid directly: the backbone's own forward would switch to channels-last
        pyramid = self.backbone.pyramid(list(self.backbone.trunk(x).values()))
        return OrderedDict(zip(["0", "1", "2", "3", "pool"], pyramid))


def shapes_models(overrides: tuple[str, ...] = ()):
    config = load_config(str(ROOT / "configs" / "shapes.yaml"), list(overrides)).model
    torch.manual_seed(0)
    ours = maskrcnn.build_model(config)
    channels = config.backbone.fpn_channels
    sizes = tuple((s,) for s in config.anchors.sizes)
    heads = config.roi_heads
    num_classes = config.num_classes
    theirs = TorchvisionMaskRCNN(
        PlainBackbone(ours),
        min_size=config.input.min_size,
        max_size=config.input.max_size,
        rpn_anchor_generator=AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes)),
        rpn_head=RPNHead(channels, 3),
        rpn_pre_nms_top_n_train=config.rpn.pre_nms_topk_train,
        rpn_post_nms_top_n_train=config.rpn.post_nms_topk_train,
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2),
        box_head=TwoMLPHead(channels * 49, heads.fc_dim),
        box_predictor=FastRCNNPredictor(heads.fc_dim, num_classes),
        box_batch_size_per_image=heads.batch_size_per_image,
        mask_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2),
        mask_head=MaskRCNNHeads(channels, [heads.mask_conv_dim] * heads.mask_num_convs, 1),
        mask_predictor=MaskRCNNPredictor(heads.mask_conv_dim, heads.mask_conv_dim, num_classes),
    )
    images, targets = shapes_batch(4, 208, 277)
    return ours, theirs, images, targets


def r50_models():
    torch.manual_seed(0)
    trunk = resnet50(norm_layer=FrozenBatchNorm2d)
    theirs = TorchvisionMaskRCNN(_resnet_fpn_extractor(trunk, 3), num_classes=91)
    ours = maskrcnn.from_torchvision(theirs.state_dict())
    images, targets = shapes_batch(2, 800, 1067, seed=1)
    return ours, theirs, images, targets


WORKLOADS = {"r50-800": r50_models, "shapes": shapes_models}


def step_function(model, images, targets, ours: bool, precision: str = "fp32"):
    """One training step; precision as the trainer's solver.precision (autocast)."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    # the trainer's optimizer, for both models
    optimizer = make_optimizer(parameters, SolverConfig(base_lr=1e-4, momentum=0.9, weight_decay=1e-4))
    model.train()

    def step():
        with autocast_context(precision, torch.device("cpu")):
            losses = model.losses(images, targets) if ours else model(images, targets)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workload", nargs="+", choices=sorted(WORKLOADS), default=["shapes", "r50-800"])
    parser.add_argument(
        "--bf16", action="store_true", help="time bfloat16 even on a CPU without bfloat16 instructions"
    )
    parser.add_argument(
        "--end-to-end",
        type=float,
        metavar="SECONDS",
        help="instead: `maskrcnn train` and a torchvision loop on shapes, each for SECONDS of wall time "
        "(benchmarks/end_to_end.py)",
    )
    args = parser.parse_args()
    if args.end_to_end:
        import end_to_end

        end_to_end.main(args.end_to_end)
        return
    # Without bfloat16 instructions PyTorch emulates bfloat16, 10-100x slower than float32.
    half = cpu_has_fast_bfloat16() or args.bf16
    print(f"# training step (loss + backward + SGD), {machine()}, median of {args.runs}")
    print("| workload | torchvision fp32 (s) | ours fp32 (s) | speed-up | ours bf16 (s) | speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.workload:
        ours, theirs, images, targets = WORKLOADS[name]()
        steps = {
            "theirs": step_function(theirs, images, targets, ours=False),
            "ours": step_function(ours, images, targets, ours=True),
        }
        if half:
            steps["ours_bf16"] = step_function(ours, images, targets, True, "bf16")
        medians = paired_medians(steps, args.runs)
        their_time, our_time = medians["theirs"], medians["ours"]
        half_time = medians.get("ours_bf16")
        print(
            f"| {name} | {their_time:.3f} | {our_time:.3f} | {their_time / our_time:.2f}x | "
            + ("- | - |" if half_time is None else f"{half_time:.3f} | {their_time / half_time:.2f}x |")
        )


if __name__ == "__main__":
    main()
