"""Matching predictions (anchors or proposals) to ground-truth boxes by IoU."""

import torch
from torch import Tensor

BELOW_LOW = -1  # a background prediction
BETWEEN = -2  # neither foreground nor background: ignored by the loss


class Matcher:
    """Assign each prediction the ground truth it overlaps most, or a negative code.

    IoU >= high: matched; IoU < low: BELOW_LOW; in between: BETWEEN. With
    `allow_low_quality`, every ground truth also keeps the predictions that overlap it
    best even under `high`, so that no object is left without a positive anchor (the
    RPN's rule in Faster R-CNN).
    """

    def __init__(self, high: float, low: float, allow_low_quality: bool = False):
        if low > high:
            raise ValueError(f"low threshold {low} is above high threshold {high}")
        self.high = high
        self.low = low
        self.allow_low_quality = allow_low_quality

    def __call__(self, iou: Tensor) -> Tensor:
        """iou: (G, P) ground truth x predictions -> (P,) int64 ground-truth index or code."""
        if iou.shape[0] == 0:
            return torch.full((iou.shape[1],), BELOW_LOW, dtype=torch.int64, device=iou.device)
        best_iou, matches = iou.max(dim=0)
        unfiltered = matches.clone()
        matches[best_iou < self.low] = BELOW_LOW
        matches[(best_iou >= self.low) & (best_iou < self.high)] = BETWEEN
        if self.allow_low_quality:
            best_per_gt = iou.max(dim=1, keepdim=True).values
            # Ties count: every prediction reaching a ground truth's best IoU is restored.
            restored = torch.where(iou == best_per_gt)[1]
            matches[restored] = unfiltered[restored]
        return matches
