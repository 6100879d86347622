"""Input normalization, resizing and batching."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskrcnn.config import InputConfig
from maskrcnn.config.validate import check_input_config
from maskrcnn.data.transforms import resized_size
from maskrcnn.structures import ImageList


class Preprocessor(nn.Module):
    """Images (C, H, W) in [0, 1] (data/images.py) -> a normalized, resized, zero-padded ImageList.

    With `channel_order` "bgr" the RGB images' channels are reversed first (weights trained
    on BGR input, detectron2's); the graph a traced model makes reverses them too. Each
    channel is then standardized by its `pixel_mean` and `pixel_std` (in the network's channel
    order). Each image is scaled so that its short side is `min_size` unless that makes the
    long side exceed `max_size` (`data.transforms.resized_size`, by `resize_rounding`); the
    batch is padded to a multiple of `size_divisibility` so that every feature level divides
    it exactly. Sizes are computed from the images' shapes as tensors, so a traced model
    resizes any image as this does.
    """

    def __init__(self, config: InputConfig):
        super().__init__()
        check_input_config(config)
        self.min_size = config.min_size
        self.max_size = config.max_size
        self.size_divisibility = config.size_divisibility
        self.resize_rounding = config.resize_rounding
        self.reverse_channels = config.channel_order == "bgr"
        # An index, not torch.flip: a gather of constant indices has an ONNX mapping everywhere.
        order = torch.arange(config.channels - 1, -1, -1) if self.reverse_channels else None
        self.register_buffer("channel_index", order, persistent=False)
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), persistent=False)

    def resize(self, image: Tensor) -> Tensor:
        """(C, h, w) -> (C, h', w') bilinear, (h', w') = resized_size((h, w), min_size, max_size)."""
        size = resized_size(
            torch._shape_as_tensor(image)[-2:], self.min_size, self.max_size, self.resize_rounding
        )
        return F.interpolate(image[None], size=(size[0], size[1]), mode="bilinear", align_corners=False)[0]

    def forward(self, images: list[Tensor], resize: bool = True) -> ImageList:
        """images: N tensors (C, Hi, Wi) float in [0, 1] on the model's device.

        resize=False keeps each image's size (training data arrives already resized).
        """
        if self.reverse_channels:
            images = [image.index_select(0, self.channel_index) for image in images]
        normalized = [(image - self.pixel_mean) / self.pixel_std for image in images]
        resized = [self.resize(image) for image in normalized] if resize else normalized
        sizes = torch.stack([torch._shape_as_tensor(image)[-2:] for image in resized])
        divisor = self.size_divisibility
        padded = torch.div(sizes.max(dim=0).values + divisor - 1, divisor, rounding_mode="floor") * divisor
        pad = padded - sizes
        batch = torch.stack([F.pad(image, (0, pad[i, 1], 0, pad[i, 0])) for i, image in enumerate(resized)])
        return ImageList(batch, sizes)
