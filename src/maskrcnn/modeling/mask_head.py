"""Mask head: a small FCN on each RoI predicting one m x m mask per class, and pasting
the predicted class's mask back into the image."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MaskHead(nn.Module):
    """pooled RoI features (K, C, S, S) -> mask_logits (K, num_classes, 2S, 2S).

    `num_convs` 3x3 convs with ReLU, a 2x2 stride-2 transposed conv with ReLU, then a
    1x1 conv giving one mask per class (the paper's FCN head, Figure 4 right).
    """

    def __init__(self, in_channels: int, num_classes: int, conv_dim: int = 256, num_convs: int = 4):
        super().__init__()
        convs = []
        for index in range(num_convs):
            convs.append(nn.Conv2d(in_channels if index == 0 else conv_dim, conv_dim, 3, padding=1))
        self.convs = nn.ModuleList(convs)
        self.deconv = nn.ConvTranspose2d(conv_dim if num_convs else in_channels, conv_dim, 2, stride=2)
        self.predictor = nn.Conv2d(conv_dim, num_classes, kernel_size=1)
        for layer in [*self.convs, self.deconv]:
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, pooled: Tensor) -> Tensor:
        x = pooled
        for conv in self.convs:
            x = conv(x).relu_()
        return self.predictor(self.deconv(x).relu_())


def select_class_masks(mask_logits: Tensor, labels: Tensor) -> Tensor:
    """mask_logits (K, C, M, M), labels (K,) -> (K, M, M) probabilities of each RoI's own class.

    Only the predicted class's mask is used: the mask branch does not compete across classes.
    """
    index = torch.arange(len(labels), device=labels.device)
    return mask_logits[index, labels].sigmoid()


def paste_masks(masks: Tensor, boxes: Tensor, image_size: tuple[int, int], threshold: float = 0.5) -> Tensor:
    """Resample each m x m mask into its box and binarize it.

    masks: (K, M, M) probabilities; boxes: (K, 4) xyxy in the output image's pixels.
    Returns (K, H, W) bool.

    The mask is padded by one zero cell and its box grown by the same fraction, so that
    the bilinear resize fades to zero at the mask's edge instead of stopping sharply.
    Boxes are snapped to whole pixels and each mask is resized only to its box's size.
    """
    height, width = image_size
    num_masks, size = masks.shape[0], masks.shape[-1]
    result = torch.zeros((num_masks, height, width), dtype=torch.bool, device=masks.device)
    if num_masks == 0:
        return result
    padded = F.pad(masks, (1, 1, 1, 1))
    grown = _grow_boxes(boxes, (size + 2) / size).to(torch.int64).tolist()
    for index, (x0, y0, x1, y1) in enumerate(grown):
        box_w = max(x1 - x0 + 1, 1)
        box_h = max(y1 - y0 + 1, 1)
        left, top = max(x0, 0), max(y0, 0)
        right, bottom = min(x1 + 1, width), min(y1 + 1, height)
        if right <= left or bottom <= top:
            continue
        resized = F.interpolate(
            padded[index][None, None], size=(box_h, box_w), mode="bilinear", align_corners=False
        )
        window = resized[0, 0, top - y0 : bottom - y0, left - x0 : right - x0]
        result[index, top:bottom, left:right] = window > threshold
    return result


def _grow_boxes(boxes: Tensor, factor: float) -> Tensor:
    """Scale (K, 4) xyxy boxes about their centres."""
    half_w = (boxes[:, 2] - boxes[:, 0]) * 0.5 * factor
    half_h = (boxes[:, 3] - boxes[:, 1]) * 0.5 * factor
    center_x = (boxes[:, 2] + boxes[:, 0]) * 0.5
    center_y = (boxes[:, 3] + boxes[:, 1]) * 0.5
    return torch.stack((center_x - half_w, center_y - half_h, center_x + half_w, center_y + half_h), dim=1)
