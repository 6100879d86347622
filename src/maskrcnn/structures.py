"""Containers passed between the stages. Boxes are always absolute xyxy pixels.

Sizes and counts stay tensors or tensor shapes (never `len()` or `int()` of a tensor) in the
code that fills these, so that tracing the model gives a graph for every image size and
detection count.
"""

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(frozen=True)
class ShapeSpec:
    """What a backbone returns under one name: a map of `channels` channels at `stride` pixels
    per cell."""

    channels: int
    stride: int


@dataclass
class ImageList:
    """A padded batch of images and the size each image had before padding.

    tensor: (N, C, H, W) normalized, zero-padded to a common size.
    image_sizes: (N, 2) int64 (height, width) of each image, each at most (H, W).
    """

    tensor: Tensor
    image_sizes: Tensor

    @property
    def padded_size(self) -> Tensor:
        """(2,) int64 (H, W) of the batch."""
        return torch._shape_as_tensor(self.tensor)[-2:]


@dataclass
class RoIs:
    """Regions of interest of a batch, flat over its images.

    boxes: (K, 4) xyxy in the (resized) input's pixels; image_index: (K,) int64 image of each;
    labels: (K,) int64, the ground-truth class in training (0 = background) and the
    predicted class at inference; matched: (K,) int64 index, within its image, of the
    ground-truth instance each RoI is matched to (training only; meaningless for background).
    """

    boxes: Tensor
    image_index: Tensor
    labels: Tensor
    matched: Tensor | None = None

    @staticmethod
    def from_boxes(boxes: list[Tensor], labels: list[Tensor] | None = None) -> "RoIs":
        """Per image (Ki, 4) boxes (and (Ki,) labels; zeros when not known, as for proposals)
        -> the RoIs of the batch."""
        image_index = torch.cat(
            [torch.full_like(b[:, 0], index, dtype=torch.int64) for index, b in enumerate(boxes)]
        )
        labels = torch.zeros_like(image_index) if labels is None else torch.cat(labels)
        return RoIs(torch.cat(boxes), image_index, labels)

    def __getitem__(self, index: Tensor) -> "RoIs":
        matched = None if self.matched is None else self.matched[index]
        return RoIs(self.boxes[index], self.image_index[index], self.labels[index], matched)

    def as_rows(self) -> Tensor:
        """(K, 5) [image_index, x1, y1, x2, y2], the RoI layout of RoIAlign."""
        return torch.cat((self.image_index[:, None].to(self.boxes.dtype), self.boxes), dim=1)

    def foreground(self) -> "RoIs":
        return self[torch.where(self.labels > 0)[0]]


@dataclass
class Detections:
    """The detections of one image.

    boxes: (D, 4) float xyxy; scores: (D,); labels: (D,) int64 class indices (0 = background,
    never returned); outputs: what the other RoI heads predicted for each detection, by name
    (e.g. "mask_probs": (D, M, M) mask probabilities before pasting).
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    outputs: dict[str, Tensor] = field(default_factory=dict)


def split_rows(values: Tensor, counts: list) -> list[Tensor]:
    """values (sum counts, ...) -> consecutive pieces of counts[i] rows; counts may be tensor
    shapes (traced sizes), which `Tensor.split` would freeze."""
    pieces, start = [], 0
    for count in counts:
        pieces.append(values[start : start + count])
        start = start + count
    return pieces


def match_near_ties(
    reference: dict, other: dict, score_tolerance: float = 1e-5, box_tolerance: float = 1e-3
) -> dict:
    """`other`'s detections reordered where two of them have scores within `score_tolerance`
    and their boxes match `reference`'s the other way round.

    The order of near-equal scores depends on float rounding (kernels, summation order);
    the detections themselves must not. reference, other: result dicts with "boxes" (D, 4)
    and "scores" (D,); every entry of `other` is reordered alike.
    """
    order = list(range(len(other["boxes"])))
    for i in range(min(len(order), len(reference["boxes"]))):
        if (other["boxes"][order[i]] - reference["boxes"][i]).abs().max() <= box_tolerance:
            continue
        for j in range(i + 1, len(order)):
            close_score = abs(other["scores"][order[j]] - reference["scores"][i]) <= score_tolerance
            close_box = (other["boxes"][order[j]] - reference["boxes"][i]).abs().max() <= box_tolerance
            if close_score and close_box:
                order[i], order[j] = order[j], order[i]
                break
    return {key: value[order] for key, value in other.items()}
