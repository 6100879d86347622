"""Containers passed between the stages. Boxes are always absolute xyxy pixels."""

from dataclasses import dataclass

from torch import Tensor


@dataclass
class ImageList:
    """A padded batch of images and the size each image had before padding.

    tensor: (N, 3, H, W) normalized, zero-padded to a common size.
    image_sizes: N (height, width) pairs, each at most (H, W).
    """

    tensor: Tensor
    image_sizes: list[tuple[int, int]]

    @property
    def padded_size(self) -> tuple[int, int]:
        return int(self.tensor.shape[-2]), int(self.tensor.shape[-1])


@dataclass
class Detections:
    """The detections of one image.

    boxes: (D, 4) float xyxy; scores: (D,); labels: (D,) int64 class indices (0 = background,
    never returned); mask_probs: (D, M, M) per-RoI mask probabilities before pasting, or None.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    mask_probs: Tensor | None = None
