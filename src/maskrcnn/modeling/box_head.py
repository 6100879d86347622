"""Box head: per-RoI features, class scores and class-specific box deltas, their loss, and the
test-time procedure that turns them into detections; the FPN model's two fully connected layers."""

import abc

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms, remove_small_boxes

from maskrcnn.fast_path_switch import fast_paths_enabled, ran
from maskrcnn.modeling.roi_head import RoIHead
from maskrcnn.ops import BoxCoder, MultiScaleRoIPooler, clip_boxes
from maskrcnn.structures import Detections, RoIs


class BoxHead(RoIHead, metaclass=abc.ABCMeta):
    """The box branch: per-RoI features -> class_logits (K, num_classes) and box_deltas
    (K, 4 * num_classes), their loss, and the test-time procedure that makes detections.

    Subclasses say how pooled RoI features (K, C, S, S) become (K, feature_dim) vectors
    (`box_features`): two fully connected layers for FPN (`FCBoxHead`), res5 and average
    pooling for C4 and C5 (`res5_box_head.Res5BoxHead`). num_classes counts the background,
    which is class 0. The head owns its box coder, its regression targets and the inference
    settings (score threshold, NMS, detections kept).
    """

    foreground_only = False

    def __init__(
        self,
        pooler: MultiScaleRoIPooler,
        in_features: tuple[str, ...],
        feature_dim: int,
        num_classes: int,
        box_coder: BoxCoder,
        score_threshold: float = 0.05,
        nms_threshold: float = 0.5,
        detections_per_image: int = 100,
        empty_boxes: str = "torchvision",
    ):
        super().__init__(pooler, in_features)
        self.cls_score = nn.Linear(feature_dim, num_classes)
        self.bbox_pred = nn.Linear(feature_dim, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)
        self.box_coder = box_coder
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.detections_per_image = detections_per_image
        self.empty_boxes = empty_boxes  # choices.EMPTY_BOXES

    def forward(self, pooled: Tensor, rois: RoIs | None = None) -> tuple[Tensor, Tensor]:
        """pooled (K, C, S, S), either memory layout -> class_logits (K, num_classes) and
        box_deltas (K, 4 * num_classes), float32 out of any autocast (detections are scored
        and decoded from them)."""
        return self.cls_and_deltas(self.box_features(pooled))

    @abc.abstractmethod
    def box_features(self, pooled: Tensor) -> Tensor:
        """(K, C, S, S) -> (K, feature_dim)."""

    def cls_and_deltas(self, features: Tensor) -> tuple[Tensor, Tensor]:
        return self.cls_score(features).float(), self.bbox_pred(features).float()

    def loss(
        self, raw: tuple[Tensor, Tensor], rois: RoIs, targets: list[dict[str, Tensor]], beta: float = 1 / 9
    ) -> dict[str, Tensor]:
        """Softmax cross-entropy over the classes, and smooth L1 on the deltas each foreground
        RoI predicts for its own ground-truth class towards that instance's box, averaged
        over all K sampled RoIs (the paper's L_cls + L_box)."""
        class_logits, box_deltas = raw
        labels = rois.labels
        classification = F.cross_entropy(class_logits, labels)
        foreground = torch.where(labels > 0)[0]
        gt_boxes = matched_targets([t["boxes"] for t in targets], rois[foreground])
        regression_targets = self.box_coder.encode(gt_boxes.to(rois.boxes.dtype), rois.boxes[foreground])
        per_class = box_deltas.reshape(box_deltas.shape[0], -1, 4)
        regression = F.smooth_l1_loss(
            per_class[foreground, labels[foreground]], regression_targets, beta=beta, reduction="sum"
        )
        return {"loss_cls": classification, "loss_box": regression / max(labels.numel(), 1)}

    def predict(
        self, raw: tuple[Tensor, Tensor], rois: RoIs, image_sizes: Tensor, score_threshold: float = 0.0
    ) -> list[Detections]:
        """rois: the proposals (K, 4) of N images; image_sizes (N, 2) int64 (height, width).

        Returns per image its detections, best first: each proposal yields one candidate per
        foreground class, scored by softmax; candidates below the head's score threshold
        (or `score_threshold`, if higher) are dropped, boxes are clipped and NMS runs per class.
        """
        class_logits, box_deltas = raw
        boxes = self.box_coder.decode(box_deltas, rois.boxes)  # (K, C, 4)
        scores = F.softmax(class_logits, dim=-1)
        detections = []
        for index, size in enumerate(image_sizes):
            rows = torch.where(rois.image_index == index)[0]
            image_boxes = clip_boxes(boxes[rows], (size[0], size[1]))
            detections.append(self.select(image_boxes, scores[rows], score_threshold))
        return detections

    def select(self, boxes: Tensor, scores: Tensor, score_threshold: float = 0.0) -> Detections:
        """One image's clipped boxes (K, C, 4) and class probabilities (K, C) -> its detections:
        threshold, drop tiny boxes, NMS per class, keep the best `detections_per_image`."""
        labels = torch.arange(scores.shape[1], device=boxes.device).expand_as(scores)
        # Column 0 is the background; a candidate is a (proposal, foreground class) pair.
        boxes = boxes[:, 1:].reshape(-1, 4)
        scores = scores[:, 1:].reshape(-1)
        labels = labels[:, 1:].reshape(-1)
        keep = torch.where(scores > self.score_threshold)[0]
        if self.empty_boxes == "torchvision":  # boxes clipping left under 0.01 px take no place
            keep = keep[remove_small_boxes(boxes[keep], 1e-2)]
        keep = keep[batched_nms(boxes[keep], scores[keep], labels[keep], self.nms_threshold)]
        keep = keep[: self.detections_per_image]
        if self.empty_boxes == "detectron2":  # they count in NMS and the cap, then go
            keep = keep[_nonempty(boxes[keep])]
        # The caller's threshold before any other head spends time on what it drops.
        keep = keep[scores[keep] >= score_threshold]
        return Detections(boxes[keep], scores[keep], labels[keep])


def _nonempty(boxes: Tensor) -> Tensor:
    """Indices of the boxes (N, 4) xyxy of positive width and height."""
    return torch.where((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))[0]


class FCBoxHead(BoxHead):
    """The FPN box head: pooled (K, C, S, S) -> fc6 -> fc7 (fc_dim each, ReLU) -> the predictors
    (the paper's 2-fc head for FPN).

    fc6 keeps its weight with the input features in (S, S, C) order, the order in which
    channels-last RoI features (as RoIAlign gives them) lie in memory, so they are
    flattened without a copy. Checkpoints hold the usual (C, S, S) order: the state dict
    hooks below convert on saving and loading, so weights move to and from torchvision
    and detectron2 unchanged. `state_dict(keep_vars=True)` (which tracers use to find
    the live parameters) returns the Parameter itself, in our order, and a Parameter given
    to `load_state_dict` is taken as such.
    """

    def __init__(
        self,
        pooler: MultiScaleRoIPooler,
        in_features: tuple[str, ...],
        in_channels: int,
        num_classes: int,
        box_coder: BoxCoder,
        fc_dim: int = 1024,
        **inference,
    ):
        super().__init__(pooler, in_features, fc_dim, num_classes, box_coder, **inference)
        resolution = pooler.output_size
        self.fc6 = nn.Linear(in_channels * resolution * resolution, fc_dim)
        self.fc7 = nn.Linear(fc_dim, fc_dim)
        self.in_channels = in_channels
        self.resolution = resolution
        self.register_state_dict_post_hook(_fc6_weight_to_checkpoint)
        self.register_load_state_dict_pre_hook(_fc6_weight_from_checkpoint)

    def box_features(self, pooled: Tensor) -> Tensor:
        """(K, C, S, S) -> (K, fc_dim): fc6 and fc7 with ReLU."""
        if fast_paths_enabled():
            ran("box_fc6_channels_last")
            hidden = self.fc6(pooled.permute(0, 2, 3, 1).flatten(1))
        else:
            weight = self._reorder_fc6(self.fc6.weight, to_checkpoint=True)
            hidden = F.linear(pooled.flatten(1), weight, self.fc6.bias)
        return self.fc7(hidden.relu_()).relu_()

    def _reorder_fc6(self, weight: Tensor, to_checkpoint: bool) -> Tensor:
        """fc6 weight (fc_dim, C*S*S) between our (S, S, C) and checkpoints' (C, S, S) order."""
        size, channels = self.resolution, self.in_channels
        if weight.dim() != 2 or weight.shape[1] != channels * size * size:
            return weight  # wrong shape: load_state_dict reports it
        if to_checkpoint:
            return weight.reshape(-1, size, size, channels).permute(0, 3, 1, 2).reshape(weight.shape)
        return weight.reshape(-1, channels, size, size).permute(0, 2, 3, 1).reshape(weight.shape)


def matched_targets(per_image: list[Tensor], rois: RoIs) -> Tensor:
    """per_image: N tensors (Gi, ...) of annotations (e.g. boxes (Gi, 4)); rois with
    `matched` -> (K, ...) the annotation each RoI is matched to."""
    counts = torch.tensor([len(values) for values in per_image], device=rois.boxes.device)
    offsets = torch.cumsum(counts, 0) - counts
    return torch.cat(per_image)[offsets[rois.image_index] + rois.matched]


def _fc6_weight_to_checkpoint(module: FCBoxHead, state_dict: dict, prefix: str, local_metadata) -> None:
    key = prefix + "fc6.weight"
    if not isinstance(state_dict[key], nn.Parameter):
        state_dict[key] = module._reorder_fc6(state_dict[key].detach(), to_checkpoint=True)


def _fc6_weight_from_checkpoint(module: FCBoxHead, state_dict: dict, prefix: str, *args) -> None:
    key = prefix + "fc6.weight"
    if key in state_dict and not isinstance(state_dict[key], nn.Parameter):
        state_dict[key] = module._reorder_fc6(state_dict[key], to_checkpoint=False)
