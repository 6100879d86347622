"""Anchors: reference boxes at every feature-map location (the paper's 5 scales x 3 aspect ratios)."""

import math

import torch
from torch import Tensor, nn

from maskrcnn.config import AnchorConfig


def cell_anchors(sizes: tuple[int, ...], aspect_ratios: tuple[float, ...], round_to_integer: bool) -> Tensor:
    """(A, 4) xyxy anchors centred on (0, 0); A = len(aspect_ratios) * len(sizes).

    Each anchor has area size^2 and height/width = ratio. Ordered ratio-major.
    """
    boxes = []
    for ratio in aspect_ratios:
        for size in sizes:
            height = size * math.sqrt(ratio)
            width = size / math.sqrt(ratio)
            boxes.append([-width / 2, -height / 2, width / 2, height / 2])
    anchors = torch.tensor(boxes, dtype=torch.float32)
    return anchors.round() if round_to_integer else anchors


class AnchorGenerator(nn.Module):
    """Anchors for every level of a feature pyramid.

    With one size per level (FPN) each level gets len(aspect_ratios) anchors per location;
    with a single feature map (C4) every size is placed on it.
    """

    def __init__(self, config: AnchorConfig, num_levels: int):
        super().__init__()
        if num_levels == 1:
            per_level = [tuple(config.sizes)]
        elif len(config.sizes) == num_levels:
            per_level = [(size,) for size in config.sizes]
        else:
            raise ValueError(
                f"anchors.sizes has {len(config.sizes)} entries for {num_levels} feature levels; "
                "give one size per level"
            )
        if config.strides is not None and len(config.strides) != num_levels:
            raise ValueError(f"anchors.strides needs {num_levels} entries, got {len(config.strides)}")
        self.strides = config.strides
        self.cell_anchors = [
            cell_anchors(s, config.aspect_ratios, config.round_to_integer) for s in per_level
        ]
        self.num_anchors_per_location = len(self.cell_anchors[0])

    def forward(
        self, feature_sizes: list[tuple[int, int]], image_size: tuple[int, int], device
    ) -> list[Tensor]:
        """feature_sizes: (Hl, Wl) per level; image_size: padded batch (H, W).

        Returns per level (Hl * Wl * A, 4) xyxy anchors in image pixels, ordered (y, x, anchor).
        """
        anchors = []
        for level, ((grid_h, grid_w), base) in enumerate(zip(feature_sizes, self.cell_anchors)):
            if self.strides is None:
                stride_y, stride_x = image_size[0] // grid_h, image_size[1] // grid_w
            else:
                stride_y = stride_x = self.strides[level]
            shift_y = torch.arange(grid_h, device=device, dtype=torch.float32) * stride_y
            shift_x = torch.arange(grid_w, device=device, dtype=torch.float32) * stride_x
            ys, xs = torch.meshgrid(shift_y, shift_x, indexing="ij")
            shifts = torch.stack((xs, ys, xs, ys), dim=-1).reshape(-1, 1, 4)
            anchors.append((shifts + base.to(device)[None]).reshape(-1, 4))
        return anchors
