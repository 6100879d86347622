"""RoIAlign forward + backward on a training workload: ours vs torchvision.ops.roi_align.

    python benchmarks/roi_align.py [--runs 5] [--rois 1024]

Two 800x1067 images' FPN levels P2-P5 (256 channels), --rois RoIs with sizes spread like
sampled proposals, each pooled from the level its size selects, sampling ratio 2, at 7x7
(box head) and 14x14 (mask head). The backward pass takes a random output gradient.
Prints the median time of each and checks that outputs and feature gradients agree.
"""

import argparse
import functools

import torch
import torchvision
from timing import machine, median_time

from maskrcnn.ops.poolers import assign_fpn_levels
from maskrcnn.ops.roi_align import roi_align

STRIDES = (4, 8, 16, 32)


def workload(num_rois: int, channels: int = 256, size=(800, 1067), seed: int = 0):
    """Features per level (2, C, H/s, W/s) and per level (K_l, 5) RoIs."""
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    padded = (-(-height // 32) * 32, -(-width // 32) * 32)
    features = [
        torch.randn(2, channels, padded[0] // s, padded[1] // s, generator=generator).contiguous(
            memory_format=torch.channels_last
        )
        for s in STRIDES
    ]
    # log-uniform sides from 16 to 600 px, like proposals sampled for training
    sides = torch.exp(torch.empty(num_rois, 2).uniform_(2.77, 6.4, generator=generator))
    centre = torch.rand(num_rois, 2, generator=generator) * torch.tensor([width, height])
    boxes = torch.cat((centre - sides / 2, centre + sides / 2), dim=1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    image = (torch.arange(num_rois) % 2).float()[:, None]
    rois = torch.cat((image, boxes), dim=1)
    levels = assign_fpn_levels(boxes, 2, 5)
    return features, [rois[levels == level] for level in range(2, 6)]


def forward_backward(function, features, rois, output_size, grads):
    """Each implementation reads the layout its model keeps features in: ours channels-last
    (as our FPN produces them), torchvision's contiguous."""
    layout = torch.channels_last if function is roi_align else torch.contiguous_format
    inputs = [f.detach().contiguous(memory_format=layout).requires_grad_(True) for f in features]
    outputs = [
        function(f, r, output_size, spatial_scale=1.0 / s, sampling_ratio=2, aligned=False)
        for f, r, s in zip(inputs, rois, STRIDES)
    ]
    torch.autograd.backward(outputs, grads)
    return outputs, [i.grad for i in inputs]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rois", type=int, default=1024)
    args = parser.parse_args()
    features, rois = workload(args.rois)
    print(f"# {machine()}")
    print(f"# RoIAlign forward+backward, {args.rois} RoIs over P2-P5 (per level {[len(r) for r in rois]}),")
    print(f"# 256 channels, sampling ratio 2, {torch.get_num_threads()} threads, median of {args.runs}")
    header = ["output", "ours (s)", "torchvision (s)", "speed-up", "max |grad diff|"]
    print(f"| {header[0]:<6} | {header[1]:>9} | {header[2]:>15} | {header[3]:>8} | {header[4]:>15} |")
    print(f"|{'-' * 8}|{'-' * 11}|{'-' * 17}|{'-' * 10}|{'-' * 17}|")
    for output_size in (7, 14):
        generator = torch.Generator().manual_seed(output_size)
        grads = [torch.randn(len(r), 256, output_size, output_size, generator=generator) for r in rois]
        ours = forward_backward(roi_align, features, rois, output_size, grads)
        theirs = forward_backward(torchvision.ops.roi_align, features, rois, output_size, grads)
        for a, b in zip(ours[0], theirs[0]):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        grad_diff = max((a - b).abs().max().item() for a, b in zip(ours[1], theirs[1]))
        our_time, their_time = (
            median_time(functools.partial(forward_backward, f, features, rois, output_size, grads), args.runs)
            for f in (roi_align, torchvision.ops.roi_align)
        )
        print(
            f"| {f'{output_size}x{output_size}':<6} | {our_time:>9.3f} | {their_time:>15.3f} | "
            f"{their_time / our_time:>7.2f}x | {grad_diff:>15.1e} |"
        )


if __name__ == "__main__":
    main()
