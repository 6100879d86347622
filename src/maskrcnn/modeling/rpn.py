"""Region Proposal Network: objectness and box deltas for every anchor, and proposal selection."""

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

from maskrcnn.config import RPNConfig
from maskrcnn.modeling.anchors import AnchorGenerator
from maskrcnn.ops import BoxCoder, clip_boxes, remove_small_boxes


class RPNHead(nn.Module):
    """A shared 3x3 conv, then per anchor one objectness logit and four box deltas.

    forward: per level (N, C, Hl, Wl) -> objectness (N, A, Hl, Wl), deltas (N, 4A, Hl, Wl).
    """

    def __init__(self, channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.objectness = nn.Conv2d(channels, num_anchors, kernel_size=1)
        self.deltas = nn.Conv2d(channels, 4 * num_anchors, kernel_size=1)
        for layer in (self.conv, self.objectness, self.deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        objectness, deltas = [], []
        for feature in features:
            hidden = self.conv(feature).relu_()
            objectness.append(self.objectness(hidden))
            deltas.append(self.deltas(hidden))
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
    """Scores every anchor and turns the best into proposals."""

    def __init__(self, config: RPNConfig, anchor_generator: AnchorGenerator, head: RPNHead):
        super().__init__()
        self.config = config
        self.anchor_generator = anchor_generator
        self.head = head
        self.box_coder = BoxCoder(config.box_weights)

    def forward(self, features: list[Tensor], padded_size: tuple[int, int]) -> RPNOutputs:
        """features: per level (N, C, Hl, Wl); padded_size: (H, W) of the image batch."""
        objectness, deltas = self.head(features)
        sizes = [tuple(f.shape[-2:]) for f in features]
        anchors = self.anchor_generator(sizes, padded_size, features[0].device)
        num_images = features[0].shape[0]
        # (N, A, H, W) -> (N, H*W*A) and (N, 4A, H, W) -> (N, H*W*A, 4), matching the anchor order
        flat_objectness = [o.permute(0, 2, 3, 1).reshape(num_images, -1) for o in objectness]
        flat_deltas = [
            d.reshape(num_images, -1, 4, *d.shape[-2:]).permute(0, 3, 4, 1, 2).reshape(num_images, -1, 4)
            for d in deltas
        ]
        return RPNOutputs(anchors, flat_objectness, flat_deltas)

    @torch.no_grad()
    def predict(self, outputs: RPNOutputs, image_sizes: list[tuple[int, int]]) -> list[Tensor]:
        """Proposals per image: (P, 4) xyxy in padded-image pixels, sorted by objectness.

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
            k = min(pre_nms, logits.shape[1])
            top_logits, top_index = logits.detach().topk(k, dim=1)
            top_deltas = torch.gather(deltas.detach(), 1, top_index[..., None].expand(-1, -1, 4))
            decoded = self.box_coder.decode(top_deltas.reshape(-1, 4), anchors[top_index.reshape(-1)])
            boxes.append(decoded.reshape(logits.shape[0], k, 4))
            scores.append(top_logits)
            levels.append(torch.full((k,), level, dtype=torch.int64, device=logits.device))
        boxes = torch.cat(boxes, dim=1)
        scores = torch.cat(scores, dim=1).sigmoid()
        levels = torch.cat(levels)

        proposals = []
        for image_boxes, image_scores, image_size in zip(boxes, scores, image_sizes):
            image_boxes = clip_boxes(image_boxes, image_size)
            keep = remove_small_boxes(image_boxes, self.config.min_box_size)
            keep = keep[
                batched_nms(image_boxes[keep], image_scores[keep], levels[keep], self.config.nms_threshold)
            ]
            proposals.append(image_boxes[keep[:post_nms]])
        return proposals
