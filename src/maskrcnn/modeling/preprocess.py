"""Input normalization, resizing and batching."""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskrcnn.config import InputConfig
from maskrcnn.config_checks import check_input_config
from maskrcnn.structures import ImageList


class Preprocessor(nn.Module):
    """Images (C, H, W) in [0, 1] (data/images.py) -> a normalized, resized, zero-padded ImageList.

    Each channel is standardized by its `pixel_mean` and `pixel_std`. Each image is scaled so
    that its short side is `min_size` unless that makes the long side exceed `max_size`; the
    batch is padded to a multiple of `size_divisibility` so that every FPN level divides it
    exactly.
    """

    def __init__(self, config: InputConfig):
        super().__init__()
        check_input_config(config)
        self.min_size = config.min_size
        self.max_size = config.max_size
        self.size_divisibility = config.size_divisibility
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), persistent=False)

    def resize(self, image: Tensor) -> Tensor:
        """(C, h, w) -> (C, h', w') bilinear, scale = min(min_size / short, max_size / long)."""
        height, width = image.shape[-2:]
        scale = min(self.min_size / min(height, width), self.max_size / max(height, width))
        return F.interpolate(
            image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
        )[0]

    def forward(self, images: list[Tensor], resize: bool = True) -> ImageList:
        """images: N tensors (C, Hi, Wi) float in [0, 1] on the model's device.

        resize=False keeps each image's size (training data arrives already resized).
        """
        normalized = [(image - self.pixel_mean) / self.pixel_std for image in images]
        resized = [self.resize(image) for image in normalized] if resize else normalized
        sizes = [(int(r.shape[-2]), int(r.shape[-1])) for r in resized]
        divisor = self.size_divisibility
        height = int(math.ceil(max(s[0] for s in sizes) / divisor) * divisor)
        width = int(math.ceil(max(s[1] for s in sizes) / divisor) * divisor)
        batch = resized[0].new_zeros((len(resized), resized[0].shape[0], height, width))
        for slot, image in zip(batch, resized):
            slot[:, : image.shape[1], : image.shape[2]].copy_(image)
        return ImageList(batch, sizes)
