"""Repeat-factor sampling for rare classes (Gupta, Dollár, Girshick, LVIS, CVPR 2019).

A class c that appears in a share f_c of the training images gets r_c = max(1, sqrt(t / f_c))
for a threshold t; an image is repeated r_i = max over its classes of r_c times per epoch
(1 for an image without instances). A fractional r_i is rounded up or down at random each
epoch (the sampler's epoch generator), so the expected count is r_i and a resume replays it.
"""

import math
from collections.abc import Sequence

import torch


def repeat_factors(image_labels: Sequence[Sequence[int]], threshold: float) -> list[float]:
    """image_labels: the labels of each image's instances -> each image's repeat factor."""
    if threshold <= 0:
        return [1.0] * len(image_labels)
    images_with: dict[int, int] = {}
    for labels in image_labels:
        for label in set(labels):
            images_with[label] = images_with.get(label, 0) + 1
    count = max(len(image_labels), 1)
    class_factor = {c: max(1.0, math.sqrt(threshold / (n / count))) for c, n in images_with.items()}
    return [max((class_factor[c] for c in set(labels)), default=1.0) for labels in image_labels]


def epoch_indices(factors: Sequence[float], generator: torch.Generator) -> list[int]:
    """Each image index floor(r) times, plus once more with probability r - floor(r)."""
    draws = torch.rand(len(factors), generator=generator, dtype=torch.float64).tolist()
    indices = []
    for index, (factor, draw) in enumerate(zip(factors, draws)):
        whole = math.floor(factor)
        indices.extend([index] * (whole + (draw < factor - whole)))
    return indices
