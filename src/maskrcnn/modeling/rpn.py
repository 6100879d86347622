"""Region Proposal Network: objectness and box deltas for every anchor, and proposal selection."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms, box_iou, remove_small_boxes

from maskrcnn.config import RPNConfig
from maskrcnn.fast_path_switch import fast_paths_enabled, ran
from maskrcnn.modeling.anchors import AnchorGenerator
from maskrcnn.ops import BoxCoder, clip_boxes
from maskrcnn.ops.conv import Conv2d
from maskrcnn.ops.layout import dense_gradient
from maskrcnn.ops.matcher import BETWEEN, Matcher
from maskrcnn.ops.sampler import BalancedSampler

MATCH_BLOCK = 1 << 24


class RPNHead(nn.Module):
    """A shared 3x3 conv, then per anchor one objectness logit and four box deltas.

    forward: per level (N, C, Hl, Wl) -> objectness (N, A, Hl, Wl), deltas (N, 4A, Hl, Wl).
    """

    def __init__(self, channels: int, num_anchors: int):
        super().__init__()
        self.conv = Conv2d(channels, channels, kernel_size=3, padding=1)
        self.objectness = nn.Conv2d(channels, num_anchors, kernel_size=1)
        self.deltas = nn.Conv2d(channels, 4 * num_anchors, kernel_size=1)
        for layer in (self.conv, self.objectness, self.deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        if not fast_paths_enabled():
            hidden = [self.conv(feature).relu() for feature in features]
            return [self.objectness(h).float() for h in hidden], [self.deltas(h).float() for h in hidden]
        # The two 1x1 predictors run as one conv: the hidden map is read once, and in
        # training its gradient comes back as one buffer instead of two to be summed.
        ran("rpn_fused_predictors")
        num_anchors = self.objectness.out_channels
        weight = torch.cat((self.objectness.weight, self.deltas.weight))
        bias = torch.cat((self.objectness.bias, self.deltas.bias))
        objectness, deltas = [], []
        for feature in features:
            hidden = self.conv(feature).relu_()
            # float32 out of any autocast: proposals are ranked and decoded from these
            outputs = dense_gradient(F.conv2d(hidden, weight, bias)).float()
            objectness.append(outputs[:, :num_anchors])
            deltas.append(outputs[:, num_anchors:])
        return objectness, deltas


@dataclass
class RPNOutputs:
    """Raw RPN outputs, flattened in anchor order (level, y, x, anchor).

    anchors: per level (Hl * Wl * A, 4) xyxy, shared by all images.
    objectness: per level (N, Hl * Wl * A) logits.
    deltas: per level (N, Hl * Wl * A, 4).
    """

    anchors: list[Tensor]
    objectness: list[Tensor]
    deltas: list[Tensor]


class RPN(nn.Module):
    """Scores every anchor and turns the best into proposals.

    in_features: the names of the backbone maps it reads (all FPN levels, P2-P6).
    """

    def __init__(
        self,
        config: RPNConfig,
        anchor_generator: AnchorGenerator,
        head: RPNHead,
        in_features: tuple[str, ...],
    ):
        super().__init__()
        self.config = config
        self.in_features = tuple(in_features)
        self.anchor_generator = anchor_generator
        self.head = head
        self.box_coder = BoxCoder(config.box_weights)
        self.matcher = Matcher(config.positive_iou, config.negative_iou, allow_low_quality=True)
        self.sampler = BalancedSampler(config.batch_size_per_image, config.positive_fraction)

    def forward(self, features: dict[str, Tensor], padded_size: Tensor) -> RPNOutputs:
        """features: the backbone's maps by name, (N, C, Hl, Wl) each; padded_size: (2,) int64
        (H, W) of the image batch."""
        features = [features[name] for name in self.in_features]
        objectness, deltas = self.head(features)
        anchors = self.anchor_generator(features, padded_size)
        num_images = features[0].shape[0]
        # (N, A, H, W) -> (N, H*W*A) and (N, 4A, H, W) -> (N, H*W*A, 4), matching the anchor order
        flat_objectness = [o.permute(0, 2, 3, 1).reshape(num_images, -1) for o in objectness]
        flat_deltas = [
            d.reshape(num_images, -1, 4, *d.shape[-2:]).permute(0, 3, 4, 1, 2).reshape(num_images, -1, 4)
            for d in deltas
        ]
        return RPNOutputs(anchors, flat_objectness, flat_deltas)

    @torch.no_grad()
    def predict(self, outputs: RPNOutputs, image_sizes: Tensor) -> list[Tensor]:
        """image_sizes: (N, 2) int64 (height, width) of each image before padding.

        Proposals per image: (P, 4) xyxy in padded-image pixels, sorted by objectness.

        Per level the top-k anchors by objectness are decoded, clipped to the image and
        stripped of tiny boxes; NMS then runs per level and the best boxes over all
        levels are kept.
        """
        training = self.training
        pre_nms = self.config.pre_nms_topk_train if training else self.config.pre_nms_topk_test
        post_nms = self.config.post_nms_topk_train if training else self.config.post_nms_topk_test
        boxes, scores, levels = [], [], []
        for level, (anchors, logits, deltas) in enumerate(
            zip(outputs.anchors, outputs.objectness, outputs.deltas)
        ):
            top_logits, top_index = logits.detach().topk(at_most(logits.shape[1], pre_nms), dim=1)
            top_deltas = deltas.detach()[
                torch.arange(top_index.shape[0], device=top_index.device)[:, None], top_index
            ]
            decoded = self.box_coder.decode(top_deltas.reshape(-1, 4), anchors[top_index.reshape(-1)])
            boxes.append(decoded.reshape(top_index.shape + (4,)))
            scores.append(top_logits)
            levels.append(torch.full_like(top_index[0], level))
        boxes = torch.cat(boxes, dim=1)
        scores = torch.cat(scores, dim=1).sigmoid()
        levels = torch.cat(levels)

        proposals = []
        for image_boxes, image_scores, image_size in zip(boxes, scores, image_sizes):
            image_boxes = clip_boxes(image_boxes, (image_size[0], image_size[1]))
            keep = _kept_by_size(image_boxes, self.config.min_box_size)
            keep = keep[
                batched_nms(image_boxes[keep], image_scores[keep], levels[keep], self.config.nms_threshold)
            ]
            proposals.append(image_boxes[keep[:post_nms]])
        return proposals

    def assign(self, anchors: Tensor, gt_boxes: list[Tensor]) -> tuple[Tensor, Tensor]:
        """anchors: (A, 4) all levels; gt_boxes: per image (G, 4).

        Returns labels (N, A) float (1 object, 0 background, -1 ignored: IoU between the
        two thresholds) and the ground-truth box each anchor is matched to (N, A, 4)
        (zeros where the image has none). All images are matched in one batched step,
        their ground truth padded to the longest list, in chunks of images that bound memory.
        """
        num_images, most = len(gt_boxes), max((len(b) for b in gt_boxes), default=0)
        padded = anchors.new_zeros((num_images, max(most, 1), 4))
        valid = torch.zeros((num_images, max(most, 1)), dtype=torch.bool, device=anchors.device)
        for image, boxes in enumerate(gt_boxes):
            padded[image, : len(boxes)] = boxes
            valid[image, : len(boxes)] = True
        # The IoU block and its intermediates hold N*G*A values (a few of them twice that):
        # match as many images at once as keep it near 2^24 values.
        per_chunk = max(1, MATCH_BLOCK // (padded.shape[1] * len(anchors)))
        matches = torch.cat(
            [
                self.matcher(batch_iou(boxes, anchors).masked_fill_(~keep[:, :, None], -1.0), keep)
                for boxes, keep in zip(padded.split(per_chunk), valid.split(per_chunk))
            ]
        )
        labels = (matches >= 0).to(anchors.dtype).masked_fill_(matches == BETWEEN, -1.0)
        matched = torch.gather(padded, 1, matches.clamp(min=0)[:, :, None].expand(-1, -1, 4))
        return labels, matched

    def targets(self, anchors: Tensor, gt_boxes: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Labels (N, A) as `assign`, and regression targets (N, A, 4) towards each positive
        anchor's match; zero for the others (an image without boxes has no match to encode)."""
        labels, matched = self.assign(anchors, gt_boxes)
        deltas = self.box_coder.encode(matched.reshape(-1, 4), anchors.repeat(len(gt_boxes), 1))
        deltas = deltas.reshape(matched.shape).masked_fill_((labels != 1)[:, :, None], 0.0)
        return labels, deltas

    def loss(self, outputs: RPNOutputs, gt_boxes: list[Tensor]) -> dict[str, Tensor]:
        """Objectness and box-regression losses of the RPN for one batch."""
        anchors = torch.cat(outputs.anchors)
        labels, matched = self.assign(anchors, gt_boxes)
        objectness = torch.cat(outputs.objectness, dim=1).flatten()  # (N*A,)
        deltas = torch.cat(outputs.deltas, dim=1).reshape(-1, 4)  # (N*A, 4)
        return rpn_loss(objectness, deltas, labels, matched, anchors, self.box_coder, self.sampler)


def at_most(count, limit: int):
    """min(count, limit) for a size that is an int, or a tensor when traced (Python's min
    would freeze the traced value)."""
    return torch.clamp(count, max=limit) if isinstance(count, Tensor) else min(count, limit)


def batch_iou(boxes: Tensor, anchors: Tensor) -> Tensor:
    """boxes (N, G, 4), anchors (A, 4) -> (N, G, A) IoU, one image at a time by torchvision."""
    if boxes.shape[0] == 0:
        return boxes.new_zeros((0, boxes.shape[1], anchors.shape[0]))
    return torch.stack([box_iou(image_boxes, anchors) for image_boxes in boxes])


def rpn_loss(
    objectness: Tensor,
    deltas: Tensor,
    labels: Tensor,
    matched: Tensor,
    anchors: Tensor,
    box_coder: BoxCoder,
    sampler: BalancedSampler,
) -> dict[str, Tensor]:
    """objectness (N*A,), deltas (N*A, 4): predictions, image-major.
    labels: (N, A) 1/0/-1; matched: (N, A, 4) each anchor's ground-truth box; anchors (A, 4).

    Binary cross-entropy over the sampled anchors (256 per image, up to half positive);
    smooth L1 (beta 1/9) on the positive anchors' deltas, normalised by the sample count.
    Regression targets are encoded for the sampled positives only.
    """
    positives, negatives = [], []
    num_anchors = labels.shape[1]
    for image, image_labels in enumerate(labels):
        positive, negative = sampler(image_labels)
        positives.append(positive + image * num_anchors)
        negatives.append(negative + image * num_anchors)
    # Sorted, so that the same anchors contribute in the same order however they were drawn.
    positive = torch.cat(positives).sort().values
    sampled = torch.cat((positive, torch.cat(negatives).sort().values))
    targets = box_coder.encode(matched.reshape(-1, 4)[positive], anchors[positive % num_anchors])
    box_loss = F.smooth_l1_loss(deltas[positive], targets, beta=1 / 9, reduction="sum")
    objectness_loss = F.binary_cross_entropy_with_logits(objectness[sampled], labels.flatten()[sampled])
    return {"loss_rpn_objectness": objectness_loss, "loss_rpn_box": box_loss / max(sampled.numel(), 1)}


def _kept_by_size(boxes: Tensor, min_size: float) -> Tensor:
    """Indices of the proposals (N, 4) whose sides are at least `min_size` (torchvision's rule),
    or, for 0, of those of positive width and height (detectron2's: only empty ones go)."""
    if min_size > 0:
        return remove_small_boxes(boxes, min_size)
    return torch.where((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))[0]
