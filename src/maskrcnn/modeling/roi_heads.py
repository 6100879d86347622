"""RoI heads: pool features for each RoI and run the box and mask branches on them."""

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops import box_iou

from maskrcnn.modeling.box_head import BoxHead, BoxInference, BoxPredictor, box_loss
from maskrcnn.modeling.mask_head import MaskHead, batch_mask_targets, mask_loss
from maskrcnn.ops import MultiScaleRoIPooler
from maskrcnn.ops.matcher import Matcher
from maskrcnn.ops.sampler import BalancedSampler
from maskrcnn.structures import Detections


@dataclass
class SampledRoIs:
    """The RoIs of one image chosen for the loss, with their targets.

    boxes: (K, 4) xyxy; labels: (K,) int64 (0 = background); matched: (K,) index of the
    ground-truth instance each RoI is matched to (meaningless for background);
    regression_targets: (K, 4) box deltas towards that instance.
    """

    boxes: Tensor
    labels: Tensor
    matched: Tensor
    regression_targets: Tensor


class RoIHeads(nn.Module):
    """The second stage: classification, box refinement and masks for each proposal.

    At inference the box branch runs on all proposals; the mask branch then runs only
    on the final detections (the paper's section 3.1, "Inference"), which is both faster
    and more accurate than masking every proposal.
    """

    def __init__(
        self,
        box_pooler: MultiScaleRoIPooler,
        box_head: BoxHead,
        box_predictor: BoxPredictor,
        box_inference: BoxInference,
        matcher: Matcher,
        sampler: BalancedSampler,
        mask_pooler: MultiScaleRoIPooler | None = None,
        mask_head: MaskHead | None = None,
    ):
        super().__init__()
        self.matcher = matcher
        self.sampler = sampler
        self.box_pooler = box_pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.box_inference = box_inference
        self.mask_pooler = mask_pooler
        self.mask_head = mask_head

    @torch.no_grad()
    def predict(
        self,
        features: list[Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        score_threshold: float = 0.0,
    ) -> list[Detections]:
        """features: per level (N, C, Hl, Wl); proposals: per image (P, 4) xyxy.

        Returns per image the detections in the (resized, unpadded) input's pixels, those
        scoring below `score_threshold` left out (before the mask head spends time on them).
        """
        pooled = self.box_pooler(features, proposals)
        class_logits, box_deltas = self.box_predictor(self.box_head(pooled))
        results = []
        for boxes, scores, labels in self.box_inference(class_logits, box_deltas, proposals, image_sizes):
            keep = scores >= score_threshold
            results.append(Detections(boxes[keep], scores[keep], labels[keep]))
        if self.mask_head is not None:
            self.predict_masks(features, results)
        return results

    def predict_masks(self, features: list[Tensor], detections: list[Detections]) -> None:
        """Fill each Detections' mask_probs (D, M, M) with its predicted class's mask."""
        boxes = [d.boxes for d in detections]
        labels = torch.cat([d.labels for d in detections])
        probs = self.mask_head.predict_probs(self.mask_pooler(features, boxes), labels)
        for detection, image_probs in zip(detections, probs.split([len(b) for b in boxes])):
            detection.mask_probs = image_probs

    @torch.no_grad()
    def sample(self, proposals: list[Tensor], targets: list[dict[str, Tensor]]) -> list[SampledRoIs]:
        """Choose, per image, the RoIs the losses are computed on.

        The ground-truth boxes join the proposals (so every object has a perfect RoI from
        the first iteration); a RoI is foreground at IoU >= 0.5 with an object, background
        otherwise; 512 RoIs per image with at most 25 % foreground.
        """
        sampled = []
        for image_proposals, target in zip(proposals, targets):
            gt_boxes, gt_labels = target["boxes"], target["labels"]
            boxes = torch.cat((image_proposals, gt_boxes.to(image_proposals.dtype)))
            if len(gt_boxes) == 0:
                matched = torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device)
                labels = torch.zeros_like(matched)
                reference = torch.zeros((1, 4), dtype=boxes.dtype, device=boxes.device)
            else:
                matches = self.matcher(box_iou(gt_boxes, boxes))
                matched = matches.clamp(min=0)
                labels = torch.where(matches >= 0, gt_labels[matched], torch.zeros_like(matched))
                reference = gt_boxes
            positive, negative = self.sampler(labels)
            keep = torch.cat((positive, negative)).sort().values
            matched, boxes = matched[keep], boxes[keep]
            deltas = self.box_inference.box_coder.encode(reference[matched].to(boxes.dtype), boxes)
            sampled.append(SampledRoIs(boxes, labels[keep], matched, deltas))
        return sampled

    def loss(
        self, features: list[Tensor], proposals: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """Box classification, box regression and mask losses for one batch.

        targets: per image boxes (G, 4), labels (G,), masks (G, H, W) in the padded input's pixels.
        """
        sampled = self.sample(proposals, targets)
        # RoIs pooled grouped by level; their targets follow the same order.
        pooled, order = self.box_pooler.pool_by_level(features, [s.boxes for s in sampled])
        class_logits, box_deltas = self.box_predictor(self.box_head(pooled))
        losses = box_loss(
            class_logits,
            box_deltas,
            torch.cat([s.labels for s in sampled])[order],
            torch.cat([s.regression_targets for s in sampled])[order],
        )
        if self.mask_head is not None:
            losses["loss_mask"] = self.mask_loss(features, sampled, targets)
        return losses

    def mask_loss(self, features: list[Tensor], sampled: list[SampledRoIs], targets: list[dict]) -> Tensor:
        """The mask branch trains on the foreground RoIs only."""
        foreground = [torch.where(s.labels > 0)[0] for s in sampled]
        boxes = [s.boxes[f] for s, f in zip(sampled, foreground)]
        pooled, order = self.mask_pooler.pool_by_level(features, boxes)
        labels = torch.cat([s.labels[f] for s, f in zip(sampled, foreground)])[order]
        class_logits = self.mask_head.class_logits(pooled, labels)
        size = class_logits.shape[-1]
        mask_target = batch_mask_targets(
            [t["masks"] for t in targets], [s.matched[f] for s, f in zip(sampled, foreground)], boxes, size
        )
        return mask_loss(class_logits, mask_target[order])
