"""RoI heads: pool features for each RoI and run the box and mask branches on them."""

import torch
from torch import Tensor, nn

from maskrcnn.modeling.box_head import BoxHead, BoxInference, BoxPredictor
from maskrcnn.modeling.mask_head import MaskHead, select_class_masks
from maskrcnn.ops import MultiScaleRoIPooler
from maskrcnn.structures import Detections


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
        mask_pooler: MultiScaleRoIPooler | None = None,
        mask_head: MaskHead | None = None,
    ):
        super().__init__()
        self.box_pooler = box_pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.box_inference = box_inference
        self.mask_pooler = mask_pooler
        self.mask_head = mask_head

    @torch.no_grad()
    def predict(
        self, features: list[Tensor], proposals: list[Tensor], image_sizes: list[tuple[int, int]]
    ) -> list[Detections]:
        """features: per level (N, C, Hl, Wl); proposals: per image (P, 4) xyxy.

        Returns per image the detections in the (resized, unpadded) input's pixels.
        """
        pooled = self.box_pooler(features, proposals)
        class_logits, box_deltas = self.box_predictor(self.box_head(pooled))
        results = [
            Detections(boxes, scores, labels)
            for boxes, scores, labels in self.box_inference(class_logits, box_deltas, proposals, image_sizes)
        ]
        if self.mask_head is not None:
            self.predict_masks(features, results)
        return results

    def predict_masks(self, features: list[Tensor], detections: list[Detections]) -> None:
        """Fill each Detections' mask_probs (D, M, M) with its predicted class's mask."""
        boxes = [d.boxes for d in detections]
        mask_logits = self.mask_head(self.mask_pooler(features, boxes))
        labels = torch.cat([d.labels for d in detections])
        probs = select_class_masks(mask_logits, labels)
        for detection, image_probs in zip(detections, probs.split([len(b) for b in boxes])):
            detection.mask_probs = image_probs
