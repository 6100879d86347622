"""RoI heads: sample RoIs for the losses and run the box head and the other heads on them."""

import torch
from torch import Tensor, nn
from torchvision.ops import box_iou

from maskrcnn.modeling.box_head import BoxHead
from maskrcnn.modeling.roi_head import RoIHead
from maskrcnn.ops.matcher import Matcher
from maskrcnn.ops.sampler import BalancedSampler
from maskrcnn.structures import Detections, RoIs, split_rows


class RoIHeads(nn.Module):
    """The second stage: the box head classifies and refines the proposals; every other head
    (masks, keypoints, ...) then runs on its RoIs.

    At inference the box head runs on all proposals and the other heads only on the final
    detections (the paper's section 3.1, "Inference"), which is both faster and more
    accurate than running them on every proposal. In training every head runs on the same
    sampled RoIs (the mask head on their foreground), as the paper's multi-task loss does.

    heads: by name; each is kept as the submodule "<name>_head" (its checkpoint keys).
    """

    def __init__(
        self, box_head: BoxHead, heads: dict[str, RoIHead], matcher: Matcher, sampler: BalancedSampler
    ):
        super().__init__()
        self.matcher = matcher
        self.sampler = sampler
        self.box_head = box_head
        self.head_names = tuple(heads)
        for name, head in heads.items():
            self.add_module(f"{name}_head", head)

    @property
    def heads(self) -> dict[str, RoIHead]:
        """The heads after the box head, by name."""
        return {name: getattr(self, f"{name}_head") for name in self.head_names}

    @torch.no_grad()
    def predict(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_sizes: Tensor,
        score_threshold: float = 0.0,
    ) -> list[Detections]:
        """features: the backbone's maps by name; proposals: per image (P, 4) xyxy;
        image_sizes: (N, 2) int64.

        Returns per image the detections in the (resized, unpadded) input's pixels, those
        scoring below `score_threshold` left out (before the other heads spend time on them),
        each head's outputs in `Detections.outputs`.
        """
        rois = RoIs.from_boxes(proposals)
        box_head = self.box_head
        detections = box_head.predict(
            box_head(box_head.pool(features, rois), rois), rois, image_sizes, score_threshold
        )
        heads = self.heads
        if heads:
            rois = RoIs.from_boxes([d.boxes for d in detections], [d.labels for d in detections])
            counts = [d.boxes.shape[0] for d in detections]
            for head in heads.values():
                outputs = head.predict(head(head.pool(features, rois), rois), rois)
                for name, values in outputs.items():
                    for detection, image_values in zip(detections, split_rows(values, counts)):
                        detection.outputs[name] = image_values
        return detections

    def loss(
        self, features: dict[str, Tensor], proposals: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """Every head's loss terms for one batch.

        targets: per image boxes (G, 4), labels (G,) and what the other heads learn (masks
        (G, H, W) in the padded input's pixels, ...).
        """
        sampled = self.sample(proposals, targets)
        losses = {}
        for head in (self.box_head, *self.heads.values()):
            rois = sampled.foreground() if head.foreground_only else sampled
            # RoIs pooled grouped by level; their targets follow the same order.
            pooled, rois = head.pool_by_level(features, rois)
            losses.update(head.loss(head(pooled, rois), rois, targets))
        return losses

    @torch.no_grad()
    def sample(self, proposals: list[Tensor], targets: list[dict[str, Tensor]]) -> RoIs:
        """Choose, per image, the RoIs the losses are computed on.

        The ground-truth boxes join the proposals (so every object has a perfect RoI from
        the first iteration); a RoI is foreground at IoU >= 0.5 with an object, background
        otherwise; 512 RoIs per image with at most 25 % foreground.
        """
        parts = []
        for index, (image_proposals, target) in enumerate(zip(proposals, targets)):
            gt_boxes, gt_labels = target["boxes"], target["labels"]
            boxes = torch.cat((image_proposals, gt_boxes.to(image_proposals.dtype)))
            if len(gt_boxes) == 0:
                matched = torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device)
                labels = torch.zeros_like(matched)
            else:
                matches = self.matcher(box_iou(gt_boxes, boxes))
                matched = matches.clamp(min=0)
                labels = torch.where(matches >= 0, gt_labels[matched], torch.zeros_like(matched))
            positive, negative = self.sampler(labels)
            keep = torch.cat((positive, negative)).sort().values
            parts.append((boxes[keep], torch.full_like(keep, index), labels[keep], matched[keep]))
        boxes, image_index, labels, matched = (torch.cat(column) for column in zip(*parts))
        return RoIs(boxes, image_index, labels, matched)
