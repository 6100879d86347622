"""Sampling a fixed-size, balanced set of positives and negatives for a loss."""

import torch
from torch import Tensor


class BalancedSampler:
    """Per image, at most `batch_size * positive_fraction` positives, the rest negatives.

    Without enough positives the batch is filled with negatives (the paper's 1:3 for RoIs,
    1:1 for anchors); without enough of either the batch is smaller.
    """

    def __init__(self, batch_size: int, positive_fraction: float):
        self.batch_size = batch_size
        self.positive_fraction = positive_fraction

    def __call__(self, labels: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """labels: (P,) with >= 1 positive, 0 negative, -1 ignored.

        Returns the sampled positive and negative indices, each (k,) int64 in random order.
        """
        positive = torch.where(labels >= 1)[0]
        negative = torch.where(labels == 0)[0]
        num_positive = min(positive.numel(), int(self.batch_size * self.positive_fraction))
        num_negative = min(negative.numel(), self.batch_size - num_positive)
        pick_positive = torch.randperm(positive.numel(), device=labels.device, generator=generator)
        pick_negative = torch.randperm(negative.numel(), device=labels.device, generator=generator)
        return positive[pick_positive[:num_positive]], negative[pick_negative[:num_negative]]
