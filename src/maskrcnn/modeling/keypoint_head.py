"""Keypoint head (the paper's section 5): each of K keypoints is a one-hot m x m mask.

The head is torchvision's and detectron2's: eight 3x3 convs of 512 channels on 14 x 14 RoI
features, a 4 x 4 stride-2 transposed conv to K maps of 28 x 28 and a 2x bilinear upsampling
to 56 x 56. Training: each visible keypoint's target is the one heatmap cell it falls in, and
its loss a softmax cross-entropy over the 56 x 56 cells (keypoints compete for positions, not
with each other). Inference: each heatmap is resized to its box (bicubic), the position of its
maximum is the keypoint and the value there its score.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maskrcnn.modeling.box_head import matched_targets
from maskrcnn.modeling.roi_head import RoIHead
from maskrcnn.ops import MultiScaleRoIPooler
from maskrcnn.ops.conv import Conv2d
from maskrcnn.structures import RoIs


class KeypointHead(RoIHead):
    """pooled RoI features (K, C, S, S) -> keypoint logits (K, num_keypoints, 4S, 4S).

    Checkpoint keys: `convs.{0..num_convs-1}` (3x3 convs), `predictor` (the transposed conv).
    """

    def __init__(
        self,
        pooler: MultiScaleRoIPooler,
        in_features: tuple[str, ...],
        in_channels: int,
        num_keypoints: int,
        conv_dim: int = 512,
        num_convs: int = 8,
        score: str = "logit",
    ):
        super().__init__(pooler, in_features)
        self.convs = nn.ModuleList(
            Conv2d(in_channels if index == 0 else conv_dim, conv_dim, 3, padding=1)
            for index in range(num_convs)
        )
        features = conv_dim if num_convs else in_channels
        self.predictor = nn.ConvTranspose2d(features, num_keypoints, kernel_size=4, stride=2, padding=1)
        for layer in [*self.convs, self.predictor]:
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        self.num_keypoints = num_keypoints
        self.score = score  # choices.KEYPOINT_SCORES

    def forward(self, pooled: Tensor, rois: RoIs | None = None) -> Tensor:
        """(K, C, S, S) -> (K, num_keypoints, 4S, 4S) float32 logits."""
        x = pooled
        for conv in self.convs:
            x = conv(x).relu_()
        logits = self.predictor(x).float()
        return F.interpolate(logits, size=(2 * logits.shape[-2], 2 * logits.shape[-1]), mode="bilinear")

    def loss(self, raw: Tensor, rois: RoIs, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """raw (K, P, M, M) logits of the foreground RoIs; targets' keypoints (G, P, 3) [x, y, v] in the
        input's pixels. Returns {"loss_keypoint": the mean cross-entropy over the visible keypoints
        that fall inside their RoI}."""
        keypoints = matched_targets([t["keypoints"] for t in targets], rois)
        cells, valid = keypoint_targets(keypoints, rois.boxes, raw.shape[-1])
        logits = raw.flatten(2)[valid]  # (V, M*M)
        if logits.shape[0] == 0:
            return {"loss_keypoint": raw.sum() * 0}
        return {"loss_keypoint": F.cross_entropy(logits, cells[valid])}

    def predict(self, raw: Tensor, rois: RoIs) -> dict[str, Tensor]:
        """{"keypoints": (D, P, 3) [x, y, 1] in the input's pixels, "keypoint_scores": (D, P)}."""
        keypoints, scores = heatmaps_to_keypoints(raw, rois.boxes, probability=self.score == "probability")
        return {"keypoints": keypoints, "keypoint_scores": scores}

    def to_image(
        self, outputs: dict[str, Tensor], boxes: Tensor, image_size: tuple[int, int], scale: Tensor
    ) -> dict[str, Tensor]:
        """The keypoints in the original image's pixels (x and y scaled as the boxes are)."""
        keypoints = outputs["keypoints"]
        xy = keypoints[..., :2] * scale.to(keypoints.dtype)
        return {
            "keypoints": torch.cat((xy, keypoints[..., 2:]), dim=-1),
            "keypoint_scores": outputs["keypoint_scores"],
        }


def keypoint_targets(keypoints: Tensor, boxes: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """keypoints (K, P, 3) [x, y, v] matched to RoIs boxes (K, 4) xyxy, in the same pixels ->
    the flat heatmap cell of each keypoint (K, P) int64 and whether it counts (K, P) bool:
    labelled (v > 0) and inside its RoI.

    A keypoint at x maps to cell floor((x - x1) * size / (x2 - x1)); one exactly on the RoI's
    right or bottom edge goes to the last cell, as torchvision's and detectron2's targets do.
    """
    x1, y1, x2, y2 = (boxes[:, i : i + 1] for i in range(4))
    x, y = keypoints[..., 0], keypoints[..., 1]
    column = ((x - x1) * (size / (x2 - x1))).floor().long()
    row = ((y - y1) * (size / (y2 - y1))).floor().long()
    column = torch.where(x == x2, size - 1, column)
    row = torch.where(y == y2, size - 1, row)
    inside = (column >= 0) & (row >= 0) & (column < size) & (row < size)
    valid = inside & (keypoints[..., 2] > 0)
    return torch.where(valid, row * size + column, 0), valid


def heatmaps_to_keypoints(maps: Tensor, boxes: Tensor, probability: bool = False) -> tuple[Tensor, Tensor]:
    """maps (D, P, M, M) logits, boxes (D, 4) xyxy -> keypoints (D, P, 3) [x, y, 1] and scores (D, P).

    Each RoI's maps are resized (bicubic) to the box's size rounded up to whole pixels; a
    keypoint is the centre of its map's best pixel, mapped back into the box, and its score
    the map's value there (torchvision's decoding), or with `probability` that peak's share
    of the softmax over the map's M x M cells, 1 / sum(exp(map - peak)) (detectron2's). A traced
    model keeps this a loop over the detections (`_script_if_tracing`), so the graph serves any
    number of them.
    """
    if maps.shape[0] == 0:
        return maps.new_zeros((0, maps.shape[1], 3)), maps.new_zeros((0, maps.shape[1]))
    return _decode_each(maps.float(), boxes.float(), probability)


@torch.jit._script_if_tracing
def _decode_each(maps: Tensor, boxes: Tensor, probability: bool) -> tuple[Tensor, Tensor]:
    num_keypoints = maps.shape[1]
    widths = (boxes[:, 2] - boxes[:, 0]).clamp(min=1)
    heights = (boxes[:, 3] - boxes[:, 1]).clamp(min=1)
    widths_ceil, heights_ceil = widths.ceil(), heights.ceil()
    # Grown by concatenation, not written in place: a traced graph keeps this a loop (ONNX Loop).
    keypoints = torch.zeros((0, num_keypoints, 3), dtype=maps.dtype, device=maps.device)
    scores = torch.zeros((0, num_keypoints), dtype=maps.dtype, device=maps.device)
    for index in range(maps.shape[0]):
        width, height = int(widths_ceil[index]), int(heights_ceil[index])
        resized = F.interpolate(
            maps[index][:, None], size=(height, width), mode="bicubic", align_corners=False
        )
        flat = resized.reshape(num_keypoints, -1)
        best = flat.argmax(dim=1)
        # the map's width as an int64 tensor: exported, int() of a float tensor stays a float
        columns = widths_ceil[index].to(torch.int64)
        row = torch.div(best, columns, rounding_mode="floor")
        column = best - row * columns
        # float by float: a graph's Div takes one type (the ceiling is the resized map's size)
        x = (column.to(maps.dtype) + 0.5) * (widths[index] / widths_ceil[index]) + boxes[index, 0]
        y = (row.to(maps.dtype) + 0.5) * (heights[index] / heights_ceil[index]) + boxes[index, 1]
        point = torch.stack((x, y, torch.ones_like(x)), dim=1)
        keypoints = torch.cat((keypoints, point[None]), dim=0)
        peak = flat.gather(1, best[:, None]).reshape(num_keypoints)
        if probability:  # normalized over the map's own cells, the peak read at the box's size
            peak = 1.0 / (maps[index] - peak[:, None, None]).exp().sum(dim=(1, 2))
        scores = torch.cat((scores, peak.reshape(1, num_keypoints)), dim=0)
    return keypoints, scores
