"""Mask R-CNN's inference as one traceable graph, for export.

The eager model computes sizes, counts and loops in Python, which a tracer would freeze
at the values of the example image. Here every size is a tensor computed from the input's
shape, so the exported graph serves any image size and any number of detections. The
networks (trunk, FPN, heads) are the model's own modules; what is rewritten is the glue:
resizing and padding, anchors, proposal selection, RoI pooling (ONNX's RoiAlign operator,
through torchvision's ONNX mapping), box inference and mask pasting.
"""

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.ops import batched_nms

from maskrcnn.choices import PREDICT_SCORE_THRESHOLD
from maskrcnn.data.intensity import PER_IMAGE, normalize_channels
from maskrcnn.modeling.mask_rcnn import MaskRCNN
from maskrcnn.ops import MultiScaleRoIPooler
from maskrcnn.ops.boxes import remove_small_boxes
from maskrcnn.ops.poolers import assign_fpn_levels


def shape_of(tensor: Tensor) -> Tensor:
    """(ndim,) int64 shape that stays a graph value under tracing."""
    return torch._shape_as_tensor(tensor)


def clip_to(boxes: Tensor, size: Tensor) -> Tensor:
    """Clip (..., 4) xyxy boxes to size = (height, width) given as a tensor."""
    height, width = size[0].to(boxes.dtype), size[1].to(boxes.dtype)
    zero = torch.zeros((), dtype=boxes.dtype)
    x1 = torch.minimum(torch.maximum(boxes[..., 0], zero), width)
    y1 = torch.minimum(torch.maximum(boxes[..., 1], zero), height)
    x2 = torch.minimum(torch.maximum(boxes[..., 2], zero), width)
    y2 = torch.minimum(torch.maximum(boxes[..., 3], zero), height)
    return torch.stack((x1, y1, x2, y2), dim=-1)


class TraceableMaskRCNN(nn.Module):
    """forward: image (C, H, W) float32 -> boxes (D, 4) xyxy in the image's pixels,
    scores (D,), labels (D,) int64, masks (D, H, W) bool; the same detections as
    `model.predict(image, score_threshold=score_threshold)` in float32.

    C is model.input.channels. The image is in [0, 1] for intensity "range" (and "auto");
    for "minmax" and "percentile" it holds raw intensities (e.g. 16-bit values) and each
    channel is normalized in the graph, as `to_image_tensor` does for the eager model.
    """

    def __init__(self, model: MaskRCNN, score_threshold: float = PREDICT_SCORE_THRESHOLD):
        super().__init__()
        self.score_threshold = float(score_threshold)
        if model.roi_heads.mask_head is None:
            raise ValueError("export needs a model with a mask head (model.masks: true)")
        if model.roi_heads.box_pooler.kind != "align":
            raise ValueError("export supports RoIAlign poolers only (roi_heads.pooler: align)")
        self.model = model.eval()

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        model = self.model
        original = shape_of(image)[1:]
        batch, resized = self.preprocess(image)
        pyramid = model.features(batch)
        proposals = self.proposals(pyramid, resized, shape_of(batch)[2:])
        heads = model.roi_heads
        features = pyramid[:-1]
        pooled = self.pool(heads.box_pooler, features, proposals)
        class_logits, deltas = heads.box_predictor(heads.box_head(pooled))
        boxes, scores, labels = self.detections(class_logits, deltas, proposals, resized)
        keep = scores >= self.score_threshold  # as model.predict(..., score_threshold)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        mask_probs = heads.mask_head.predict_probs(self.pool(heads.mask_pooler, features, boxes), labels)
        scale = (original.to(torch.float32) / resized.to(torch.float32)).flip(0).repeat(2)
        boxes = boxes * scale
        masks = paste_masks_in_graph(mask_probs, boxes, original, model.config.roi_heads.mask_threshold)
        return boxes, scores, labels, masks

    def preprocess(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """-> (1, C, H', W') normalized, resized and padded batch, and the (2,) resized size."""
        pre = self.model.preprocessor
        intensity = self.model.config.input
        if intensity.intensity in PER_IMAGE:
            image = normalize_channels(image, intensity.intensity, intensity.percentiles)
        normalized = (image - pre.pixel_mean) / pre.pixel_std
        size = shape_of(image)[1:].to(torch.float64)
        # float64 as in the eager model's Python arithmetic: the same output size, to the pixel.
        # (No 0-dim constants: the exporter computes those in float32, whatever their dtype.)
        limits = torch.tensor([float(pre.min_size), float(pre.max_size)], dtype=torch.float64)
        scale = (limits / torch.stack((size.min(), size.max()))).min()
        resized = (size * scale).floor().to(torch.int64)
        batch = F.interpolate(
            normalized[None], size=(resized[0], resized[1]), mode="bilinear", align_corners=False
        )
        divisor = pre.size_divisibility
        padded = (torch.ceil(resized.to(torch.float64) / divisor) * divisor).to(torch.int64)
        pad = padded - resized
        return F.pad(batch, (0, pad[1], 0, pad[0])), resized

    def anchors(self, pyramid: list[Tensor], padded: Tensor) -> list[Tensor]:
        """Per level (Hl * Wl * A, 4) anchors, as AnchorGenerator, with traced sizes."""
        generator = self.model.rpn.anchor_generator
        result = []
        for level, (feature, base) in enumerate(zip(pyramid, generator.cell_anchors)):
            grid = shape_of(feature)[2:]
            if generator.strides is None:
                stride = (padded // grid).to(torch.float32)
            else:
                stride = torch.full((2,), float(generator.strides[level]))
            shift_y = torch.arange(grid[0], dtype=torch.float32) * stride[0]
            shift_x = torch.arange(grid[1], dtype=torch.float32) * stride[1]
            ys, xs = torch.meshgrid(shift_y, shift_x, indexing="ij")
            shifts = torch.stack((xs, ys, xs, ys), dim=-1).reshape(-1, 1, 4)
            result.append((shifts + base[None]).reshape(-1, 4))
        return result

    def proposals(self, pyramid: list[Tensor], resized: Tensor, padded: Tensor) -> Tensor:
        """(P, 4) proposals, as RPN.predict at test time."""
        rpn = self.model.rpn
        objectness, deltas = rpn.head(pyramid)
        anchors = self.anchors(pyramid, padded)
        boxes, scores, levels = [], [], []
        for level, (level_anchors, logits, level_deltas) in enumerate(zip(anchors, objectness, deltas)):
            logits = logits.permute(0, 2, 3, 1).reshape(-1)
            level_deltas = level_deltas.reshape(1, -1, 4, *level_deltas.shape[-2:])
            level_deltas = level_deltas.permute(0, 3, 4, 1, 2).reshape(-1, 4)
            k = torch.clamp(shape_of(logits)[0], max=rpn.config.pre_nms_topk_test)
            top_logits, top_index = logits.topk(k)
            decoded = rpn.box_coder.decode(level_deltas[top_index], level_anchors[top_index])
            boxes.append(decoded.reshape(-1, 4))
            scores.append(top_logits)
            levels.append(torch.full_like(top_index, level))
        boxes = clip_to(torch.cat(boxes), resized)
        scores = torch.cat(scores).sigmoid()
        levels = torch.cat(levels)
        keep = remove_small_boxes(boxes, rpn.config.min_box_size)
        keep = keep[batched_nms(boxes[keep], scores[keep], levels[keep], rpn.config.nms_threshold)]
        return boxes[keep[: rpn.config.post_nms_topk_test]]

    @staticmethod
    def pool(pooler: MultiScaleRoIPooler, features: list[Tensor], boxes: Tensor) -> Tensor:
        """(K, C, S, S) RoI features, each RoI from the level its size selects."""
        rois = torch.cat((torch.zeros_like(boxes[:, :1]), boxes), dim=1)
        levels = assign_fpn_levels(
            boxes, pooler.levels[0], pooler.levels[-1], pooler.canonical_size, pooler.canonical_level
        )
        pooled, order = [], []
        for level, level_features, stride in zip(pooler.levels, features, pooler.strides):
            index = torch.where(levels == level)[0]
            pooled.append(
                torchvision.ops.roi_align(
                    level_features.contiguous(),
                    rois[index],
                    pooler.output_size,
                    1.0 / stride,
                    pooler.sampling_ratio,
                    pooler.aligned,
                )
            )
            order.append(index)
        order = torch.cat(order)
        return torch.cat(pooled)[torch.argsort(order)]

    def detections(
        self, class_logits: Tensor, deltas: Tensor, proposals: Tensor, resized: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """BoxInference for one image, clipped to the traced size."""
        inference = self.model.roi_heads.box_inference
        boxes = clip_to(inference.box_coder.decode(deltas, proposals), resized)
        return inference.select(boxes, F.softmax(class_logits, dim=-1))


def paste_masks_in_graph(masks: Tensor, boxes: Tensor, image_size: Tensor, threshold: float) -> Tensor:
    """`paste_masks` without a loop: (K, M, M) probabilities, (K, 4) boxes -> (K, H, W) bool.

    Bilinear resizing is separable, so each pasted mask is Wy @ padded_mask @ Wx^T with
    (H, M+2) and (W, M+2) interpolation matrices that are zero outside the box: the same
    boxes snapped to whole pixels, the same one-cell zero border and the same sample
    positions as the eager paste.
    """
    size = masks.shape[-1]
    padded = F.pad(masks, (1, 1, 1, 1))
    factor = (size + 2) / size
    half_w = (boxes[:, 2] - boxes[:, 0]) * 0.5 * factor
    half_h = (boxes[:, 3] - boxes[:, 1]) * 0.5 * factor
    center_x = (boxes[:, 2] + boxes[:, 0]) * 0.5
    center_y = (boxes[:, 3] + boxes[:, 1]) * 0.5
    grown = torch.stack((center_x - half_w, center_y - half_h, center_x + half_w, center_y + half_h), dim=1)
    grown = grown.to(torch.int64)  # truncation towards zero, as the eager paste's int conversion
    rows = _interpolation_matrix(grown[:, 1], grown[:, 3], image_size[0], size + 2)
    cols = _interpolation_matrix(grown[:, 0], grown[:, 2], image_size[1], size + 2)
    pasted = rows @ padded @ cols.transpose(1, 2)
    return pasted > threshold


def _interpolation_matrix(start: Tensor, end: Tensor, extent: Tensor, cells: int) -> Tensor:
    """(K, extent, cells) weights resizing `cells` values onto pixels start..end (inclusive),
    as F.interpolate(mode="bilinear", align_corners=False) does; zero rows outside."""
    length = torch.clamp(end - start + 1, min=1).to(torch.float32)[:, None]
    pixel = torch.arange(extent, dtype=torch.int64)[None, :]
    local = (pixel - start[:, None]).to(torch.float32)
    source = torch.clamp((local + 0.5) * (cells / length) - 0.5, min=0.0)
    low = torch.clamp(source.floor(), max=cells - 1)
    high = torch.clamp(low + 1, max=cells - 1)
    fraction = source - low
    inside = ((pixel >= start[:, None]) & (pixel <= end[:, None])).to(torch.float32)
    cell = torch.arange(cells, dtype=torch.float32)[None, None, :]
    weights = (cell == low[..., None]).to(torch.float32) * (1 - fraction)[..., None]
    weights = weights + (cell == high[..., None]).to(torch.float32) * fraction[..., None]
    return weights * inside[..., None]
