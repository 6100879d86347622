"""Box regression targets: the (dx, dy, dw, dh) parametrisation of R-CNN."""

import math

import torch
from torch import Tensor

# Larger log-space deltas would make exp() overflow for untrained heads; the
# bound lets a box grow to at most 1000/16 times its reference size.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """Encodes boxes relative to reference boxes and decodes predicted deltas.

    weights: (wx, wy, ww, wh) the deltas are multiplied by; (1, 1, 1, 1) for the RPN
    and (10, 10, 5, 5) for the box head, so that both regress targets of similar scale.
    """

    def __init__(self, weights: tuple[float, float, float, float], scale_clamp: float = DEFAULT_SCALE_CLAMP):
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    def encode(self, boxes: Tensor, references: Tensor) -> Tensor:
        """boxes, references: (N, 4) xyxy -> (N, 4) deltas that turn references into boxes."""
        wx, wy, ww, wh = self.weights
        ref_w = references[:, 2] - references[:, 0]
        ref_h = references[:, 3] - references[:, 1]
        ref_x = references[:, 0] + 0.5 * ref_w
        ref_y = references[:, 1] + 0.5 * ref_h
        box_w = boxes[:, 2] - boxes[:, 0]
        box_h = boxes[:, 3] - boxes[:, 1]
        box_x = boxes[:, 0] + 0.5 * box_w
        box_y = boxes[:, 1] + 0.5 * box_h
        return torch.stack(
            (
                wx * (box_x - ref_x) / ref_w,
                wy * (box_y - ref_y) / ref_h,
                ww * torch.log(box_w / ref_w),
                wh * torch.log(box_h / ref_h),
            ),
            dim=1,
        )

    def decode(self, deltas: Tensor, references: Tensor) -> Tensor:
        """deltas: (N, 4 * C), references: (N, 4) xyxy -> (N, C, 4) xyxy boxes.

        C is 1 for class-agnostic deltas and the number of classes for class-specific ones.
        """
        references = references.to(deltas.dtype)
        wx, wy, ww, wh = self.weights
        ref_w = (references[:, 2] - references[:, 0])[:, None]
        ref_h = (references[:, 3] - references[:, 1])[:, None]
        ref_x = references[:, 0, None] + 0.5 * ref_w
        ref_y = references[:, 1, None] + 0.5 * ref_h

        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = (deltas[:, 2::4] / ww).clamp(max=self.scale_clamp)
        dh = (deltas[:, 3::4] / wh).clamp(max=self.scale_clamp)

        center_x = dx * ref_w + ref_x
        center_y = dy * ref_h + ref_y
        half_w = 0.5 * (torch.exp(dw) * ref_w)
        half_h = 0.5 * (torch.exp(dh) * ref_h)
        return torch.stack(
            (center_x - half_w, center_y - half_h, center_x + half_w, center_y + half_h), dim=2
        )
