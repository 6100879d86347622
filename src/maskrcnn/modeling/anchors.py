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

    strides: the stride of each feature map the RPN reads, from the backbone's
    `output_shape()`. With one size per level (FPN) each level gets len(aspect_ratios)
    anchors per location; with a single feature map (C4) every size is placed on it.
    config.strides_from "image" spaces anchors by padded image size // feature size instead
    (torchvision's rule, which its COCO weights were trained with).
    """

    def __init__(self, config: AnchorConfig, strides: tuple[int, ...]):
        super().__init__()
        num_levels = len(strides)
        if isinstance(config.sizes, str):
            raise ValueError(
                f"anchors.sizes is {config.sizes!r}: fit the sizes to the training boxes first "
                "(maskrcnn train does, modeling.anchor_fit.fit_anchor_sizes)"
            )
        if num_levels == 1:
            per_level = [tuple(config.sizes)]
        elif len(config.sizes) == num_levels:
            per_level = [(size,) for size in config.sizes]
        else:
            raise ValueError(
                f"anchors.sizes has {len(config.sizes)} entries for {num_levels} feature levels; "
                "give one size per level"
            )
        if config.strides_from not in ("backbone", "image"):
            raise ValueError(
                f"anchors.strides_from must be 'backbone' or 'image', got {config.strides_from!r}"
            )
        self.strides = tuple(int(s) for s in strides)
        self.from_image = config.strides_from == "image"
        for level, sizes in enumerate(per_level):
            anchors = cell_anchors(sizes, config.aspect_ratios, config.round_to_integer)
            self.register_buffer(f"cell_anchors_{level}", anchors, persistent=False)
        self.num_anchors_per_location = len(config.aspect_ratios) * len(per_level[0])

    @property
    def cell_anchors(self) -> list[Tensor]:
        return [getattr(self, f"cell_anchors_{level}") for level in range(len(self.strides))]

    def forward(self, features: list[Tensor], image_size: Tensor) -> list[Tensor]:
        """features: per level (N, C, Hl, Wl); image_size: (2,) int64 padded batch (H, W).

        Returns per level (Hl * Wl * A, 4) xyxy anchors in image pixels, ordered (y, x, anchor).
        """
        anchors = []
        for feature, stride, base in zip(features, self.strides, self.cell_anchors):
            grid_h, grid_w = feature.shape[-2:]
            if self.from_image:
                stride_y = torch.div(image_size[0], grid_h, rounding_mode="floor")
                stride_x = torch.div(image_size[1], grid_w, rounding_mode="floor")
            else:
                stride_y = stride_x = stride
            shift_y = torch.arange(grid_h, device=base.device, dtype=torch.float32) * stride_y
            shift_x = torch.arange(grid_w, device=base.device, dtype=torch.float32) * stride_x
            ys, xs = torch.meshgrid(shift_y, shift_x, indexing="ij")
            shifts = torch.stack((xs, ys, xs, ys), dim=-1).reshape(-1, 1, 4)
            anchors.append((shifts + base[None]).reshape(-1, 4))
        return anchors
