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

    def __call__(self, iou: Tensor, valid: Tensor | None = None) -> Tensor:
        """iou: (G, P) ground truth x predictions -> (P,) int64 ground-truth index or code.

        Batched: iou (N, G, P) for N images whose ground truth is padded to G rows, valid
        (N, G) bool marking the real rows (padding rows must hold IoU < 0) -> (N, P).
        """
        if iou.dim() == 2:
            return self(iou[None], None if valid is None else valid[None])[0]
        if iou.shape[1] == 0 or iou.shape[2] == 0:
            # No ground truth: every prediction is background. No predictions: nothing to
            # match, and the max over predictions below would raise on an empty dimension.
            return torch.full((iou.shape[0], iou.shape[2]), BELOW_LOW, dtype=torch.int64, device=iou.device)
        best_iou, unfiltered = iou.max(dim=1)
        matches = torch.where(best_iou < self.low, BELOW_LOW, unfiltered)
        matches = torch.where((best_iou >= self.low) & (best_iou < self.high), BETWEEN, matches)
        if self.allow_low_quality:
            best_per_gt = iou.max(dim=2, keepdim=True).values
            # Ties count: every prediction reaching a ground truth's best IoU is restored.
            reaches_best = iou == best_per_gt
            if valid is not None:
                reaches_best &= valid[:, :, None]
            matches = torch.where(reaches_best.any(dim=1), unfiltered, matches)
        return matches
