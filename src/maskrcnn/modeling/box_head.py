"""Box head: two fully connected layers, class scores and class-specific box deltas, and
the inference that turns them into detections."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms

from maskrcnn.ops import BoxCoder, clip_boxes, remove_small_boxes


class BoxHead(nn.Module):
    """pooled RoI features (K, C, S, S) -> (K, fc_dim) via fc6 and fc7 with ReLU.

    fc6 keeps its weight with the input features in (S, S, C) order, the order in which
    channels-last RoI features (as RoIAlign gives them) lie in memory, so they are
    flattened without a copy. Checkpoints hold the usual (C, S, S) order: the state dict
    hooks below convert on saving and loading, so weights move to and from torchvision
    and detectron2 unchanged. `state_dict(keep_vars=True)` (which tracers use to find
    the live parameters) returns the Parameter itself, in our order, and a Parameter given
    to `load_state_dict` is taken as such.
    """

    def __init__(self, in_channels: int, resolution: int, fc_dim: int = 1024):
        super().__init__()
        self.fc6 = nn.Linear(in_channels * resolution * resolution, fc_dim)
        self.fc7 = nn.Linear(fc_dim, fc_dim)
        self.in_channels = in_channels
        self.resolution = resolution
        self.out_features = fc_dim
        self.register_state_dict_post_hook(_fc6_weight_to_checkpoint)
        self.register_load_state_dict_pre_hook(_fc6_weight_from_checkpoint)

    def forward(self, pooled: Tensor) -> Tensor:
        """pooled (K, C, S, S), either memory layout -> (K, fc_dim)."""
        hidden = self.fc6(pooled.permute(0, 2, 3, 1).flatten(1))
        return self.fc7(hidden.relu_()).relu_()

    def reorder_fc6(self, weight: Tensor, to_checkpoint: bool) -> Tensor:
        """fc6 weight (fc_dim, C*S*S) between our (S, S, C) and checkpoints' (C, S, S) order."""
        size, channels = self.resolution, self.in_channels
        if weight.dim() != 2 or weight.shape[1] != channels * size * size:
            return weight  # wrong shape: load_state_dict reports it
        if to_checkpoint:
            return weight.detach().reshape(-1, size, size, channels).permute(0, 3, 1, 2).reshape(weight.shape)
        return weight.reshape(-1, channels, size, size).permute(0, 2, 3, 1).reshape(weight.shape)


def _fc6_weight_to_checkpoint(module: BoxHead, state_dict: dict, prefix: str, local_metadata) -> None:
    key = prefix + "fc6.weight"
    if not isinstance(state_dict[key], nn.Parameter):
        state_dict[key] = module.reorder_fc6(state_dict[key], to_checkpoint=True)


def _fc6_weight_from_checkpoint(module: BoxHead, state_dict: dict, prefix: str, *args) -> None:
    key = prefix + "fc6.weight"
    if key in state_dict and not isinstance(state_dict[key], nn.Parameter):
        state_dict[key] = module.reorder_fc6(state_dict[key], to_checkpoint=False)


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
