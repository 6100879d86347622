"""Box head: two fully connected layers, class scores and class-specific box deltas, and
the inference that turns them into detections."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms

from maskrcnn.modeling.weight_cache import derived_weight
from maskrcnn.ops import BoxCoder, clip_boxes, remove_small_boxes


class BoxHead(nn.Module):
    """pooled RoI features (K, C, S, S) -> (K, fc_dim) via fc6 and fc7 with ReLU."""

    def __init__(self, in_channels: int, resolution: int, fc_dim: int = 1024):
        super().__init__()
        self.fc6 = nn.Linear(in_channels * resolution * resolution, fc_dim)
        self.fc7 = nn.Linear(fc_dim, fc_dim)
        self.resolution = resolution
        self.out_features = fc_dim

    def forward(self, pooled: Tensor) -> Tensor:
        """pooled (K, C, S, S), either memory layout -> (K, fc_dim)."""
        if pooled.numel() and pooled.stride(1) == 1 and pooled.shape[1] > 1:
            # Channels-last RoI features (as RoIAlign gives them): flatten them as they lie
            # and reorder fc6's (much smaller, cached) weight to match instead of the features.
            hidden = F.linear(pooled.permute(0, 2, 3, 1).flatten(1), self._fc6_weight_hwc(), self.fc6.bias)
        else:
            hidden = self.fc6(pooled.flatten(1))
        return self.fc7(hidden.relu_()).relu_()

    def _fc6_weight_hwc(self) -> Tensor:
        """fc6's weight with its input features in (S, S, C) order instead of (C, S, S)."""
        weight = self.fc6.weight
        return derived_weight(self, "_fc6_hwc", (weight,), lambda: self._reorder(weight))

    def _reorder(self, weight: Tensor) -> Tensor:
        channels = weight.shape[1] // (self.resolution * self.resolution)
        shape = (weight.shape[0], channels, self.resolution, self.resolution)
        return weight.view(shape).permute(0, 2, 3, 1).reshape(weight.shape[0], -1)


class BoxPredictor(nn.Module):
    """(K, D) -> class_logits (K, num_classes) and box_deltas (K, num_classes * 4).

    num_classes counts the background, which is class 0.
    """

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes)
        self.bbox_pred = nn.Linear(in_features, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        # float32 out of any autocast: detections are scored and decoded from these
        return self.cls_score(features).float(), self.bbox_pred(features).float()


@dataclass
class BoxInference:
    """Post-processing settings for detections (the paper's test-time procedure)."""

    box_coder: BoxCoder
    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    detections_per_image: int = 100
    min_box_size: float = 1e-2

    def __call__(
        self,
        class_logits: Tensor,
        box_deltas: Tensor,
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> list[tuple[Tensor, Tensor, Tensor]]:
        """class_logits (K, C), box_deltas (K, 4C), proposals: per image (Ki, 4), sum Ki = K.

        Returns per image (boxes (D, 4), scores (D,), labels (D,) int64), best first: each
        proposal yields one candidate per foreground class, scored by softmax; candidates
        below the score threshold are dropped and NMS runs per class.
        """
        boxes = self.box_coder.decode(box_deltas, torch.cat(proposals))  # (K, C, 4)
        scores = F.softmax(class_logits, dim=-1)
        counts = [len(p) for p in proposals]
        per_image = zip(boxes.split(counts), scores.split(counts), image_sizes)
        return [self.select(clip_boxes(b, size), s) for b, s, size in per_image]

    def select(self, boxes: Tensor, scores: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One image's clipped boxes (K, C, 4) and class probabilities (K, C) -> its detections
        (boxes (D, 4), scores (D,), labels (D,)): threshold, drop tiny boxes, NMS per class,
        keep the best `detections_per_image`. Uses no Python sizes, so it also traces."""
        labels = torch.arange(scores.shape[1], device=boxes.device).expand_as(scores)
        # Column 0 is the background; a candidate is a (proposal, foreground class) pair.
        boxes = boxes[:, 1:].reshape(-1, 4)
        scores = scores[:, 1:].reshape(-1)
        labels = labels[:, 1:].reshape(-1)
        keep = torch.where(scores > self.score_threshold)[0]
        keep = keep[remove_small_boxes(boxes[keep], self.min_box_size)]
        keep = keep[batched_nms(boxes[keep], scores[keep], labels[keep], self.nms_threshold)]
        keep = keep[: self.detections_per_image]
        return boxes[keep], scores[keep], labels[keep]


def box_loss(
    class_logits: Tensor, box_deltas: Tensor, labels: Tensor, regression_targets: Tensor, beta: float = 1 / 9
) -> dict[str, Tensor]:
    """class_logits (K, C), box_deltas (K, 4C): predictions for the sampled RoIs;
    labels (K,) int64 (0 = background); regression_targets (K, 4).

    Softmax cross-entropy over the K+1 classes, and smooth L1 on the deltas each
    foreground RoI predicts for its own ground-truth class, averaged over all RoIs.
    """
    classification = F.cross_entropy(class_logits, labels)
    foreground = torch.where(labels > 0)[0]
    per_class = box_deltas.reshape(len(box_deltas), -1, 4)
    regression = F.smooth_l1_loss(
        per_class[foreground, labels[foreground]], regression_targets[foreground], beta=beta, reduction="sum"
    )
    return {"loss_cls": classification, "loss_box": regression / max(labels.numel(), 1)}
