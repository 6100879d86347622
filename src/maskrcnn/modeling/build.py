"""Mask R-CNN wired from its config, as the paper's Figures 1 and 4 draw it: preprocessing,
a backbone, the RPN, and the RoI heads (box, mask, keypoints). One small function a part; the
config's choices (`backbone.kind`, `roi_heads.mask_head`, `masks`, `keypoints`) pick the parts."""

import torch
from torch import nn

from maskrcnn.config import ModelConfig
from maskrcnn.config.validate import check_model_config
from maskrcnn.modeling.anchors import AnchorGenerator
from maskrcnn.modeling.backbone import ResNet, SingleMapBackbone, res5_stage
from maskrcnn.modeling.box_head import FCBoxHead
from maskrcnn.modeling.fpn import FPN, RPN_ONLY_FEATURES
from maskrcnn.modeling.keypoint_head import KeypointHead
from maskrcnn.modeling.mask_head import FCNMaskHead
from maskrcnn.modeling.mask_rcnn import MaskRCNN
from maskrcnn.modeling.mlp_mask_head import MLPMaskHead
from maskrcnn.modeling.preprocess import Preprocessor
from maskrcnn.modeling.res5_box_head import Res5BoxHead
from maskrcnn.modeling.roi_head import RoIHead
from maskrcnn.modeling.roi_heads import RoIHeads
from maskrcnn.modeling.rpn import RPN, RPNHead
from maskrcnn.ops import BoxCoder, MultiScaleRoIPooler
from maskrcnn.ops.matcher import Matcher
from maskrcnn.ops.sampler import BalancedSampler


def build_model(config: ModelConfig, extra_heads: dict[str, RoIHead] | None = None) -> MaskRCNN:
    """Wire Mask R-CNN from its config.

    extra_heads: further RoI heads by name (e.g. a keypoint head), run after the box and
    mask heads on the same RoIs; each reads the backbone maps its `in_features` names.
    """
    check_model_config(config)  # before any layer is sized by it
    backbone = build_backbone(config)
    shapes = backbone.output_shape()
    rpn = build_rpn(config, shapes)
    parts = _RoIParts(config, shapes)
    box_head, res5 = build_box_head(parts)
    heads: dict[str, RoIHead] = {}
    if config.masks:
        heads["mask"] = build_mask_head(parts, res5)
    if config.keypoints:  # the paper's section 5: K one-hot masks per RoI
        heads["keypoint"] = build_keypoint_head(parts)
    heads.update(extra_heads or {})
    sampling = config.roi_heads
    roi_heads = RoIHeads(
        box_head,
        heads,
        Matcher(sampling.foreground_iou, sampling.foreground_iou),
        BalancedSampler(sampling.batch_size_per_image, sampling.positive_fraction),
    )
    model = MaskRCNN(config, Preprocessor(config.input), backbone, rpn, roi_heads)
    # Convolution weights in the layout the features use: no reorder on every call.
    return model.to(memory_format=torch.channels_last)


def build_backbone(config: ModelConfig) -> nn.Module:
    """The trunk and what the RPN and RoI heads read from it (`model.backbone.kind`): FPN's
    P2-P6, C4's res4 or C5's res5."""
    trunk = config.backbone
    channels = config.input.channels
    if trunk.kind == "fpn":
        return FPN(ResNet(trunk, in_channels=channels), trunk.fpn_channels)
    if trunk.kind == "c4":
        return SingleMapBackbone(ResNet(trunk, stages=3, in_channels=channels), "res4")
    return SingleMapBackbone(ResNet(trunk, stages=4, in_channels=channels), "res5")


def build_rpn(config: ModelConfig, shapes: dict) -> RPN:
    """The RPN on every map the backbone gives (FPN: P2-P6), its anchors spaced by their strides."""
    features = tuple(shapes)
    anchors = AnchorGenerator(config.anchors, tuple(shapes[name].stride for name in features))
    head = RPNHead(shapes[features[0]].channels, anchors.num_anchors_per_location)
    return RPN(config.rpn, anchors, head, features)


class _RoIParts:
    """What every RoI head is built from: the maps it reads, their channels, a pooler of a
    given resolution over them, the box coder and the box head's inference settings."""

    def __init__(self, config: ModelConfig, shapes: dict):
        self.config, self.heads = config, config.roi_heads
        self.features = tuple(name for name in shapes if name not in RPN_ONLY_FEATURES)
        self.strides = tuple(shapes[name].stride for name in self.features)
        self.channels = shapes[next(iter(shapes))].channels

    def pooler(self, resolution: int) -> MultiScaleRoIPooler:
        heads = self.heads
        return MultiScaleRoIPooler(
            resolution, self.strides, heads.sampling_ratio, heads.aligned, heads.pooler
        )

    def inference(self) -> dict:
        heads = self.heads
        return {
            "score_threshold": heads.score_threshold,
            "nms_threshold": heads.nms_threshold,
            "detections_per_image": heads.detections_per_image,
            "empty_boxes": heads.empty_boxes,
        }


def build_box_head(parts: _RoIParts):
    """(the box head, res5 when the mask head shares it (C4), else None).

    FPN: Figure 4, right: two fc layers. C4 and C5: Figure 4, left: res5 (C4 runs it on the
    pooled RoIs) and average pooling."""
    config, heads, coder = parts.config, parts.heads, BoxCoder(parts.heads.box_weights)
    if config.backbone.kind == "fpn":
        box_head = FCBoxHead(
            parts.pooler(heads.box_resolution),
            parts.features,
            parts.channels,
            config.num_classes,
            coder,
            heads.fc_dim,
            **parts.inference(),
        )
        return box_head, None
    res5 = res5_stage(config.backbone) if config.backbone.kind == "c4" else None
    box_head = Res5BoxHead(
        parts.pooler(heads.box_resolution),
        parts.features,
        res5,
        config.backbone.stage_channels[3],
        config.num_classes,
        coder,
        **parts.inference(),
    )
    return box_head, res5


def build_mask_head(parts: _RoIParts, res5: nn.Module | None) -> RoIHead:
    """The FCN of Figure 4 (`roi_heads.mask_head: fcn`) or Table 2e's fully connected head
    (`mlp`); on C4 it reads res5's output of the pooled RoIs, half their side."""
    config, heads = parts.config, parts.heads
    if config.backbone.kind == "fpn":
        channels, convs, side = parts.channels, heads.mask_num_convs, heads.mask_resolution
    else:  # res5's first block has stride 2: the mask head sees half the pooled side
        channels, convs = config.backbone.stage_channels[3], 0
        side = (heads.mask_resolution + 1) // 2 if res5 is not None else heads.mask_resolution
    shared = {
        "threshold": heads.mask_threshold,
        "loss": heads.mask_loss,
        "roi_transform": res5,
        "paste": heads.mask_paste,
    }
    pooler = parts.pooler(heads.mask_resolution)
    if heads.mask_head == "mlp":  # Table 2e's baseline
        return MLPMaskHead(
            pooler, parts.features, channels, config.num_classes, heads.mask_fc_dim, resolution=side, **shared
        )
    return FCNMaskHead(
        pooler, parts.features, channels, config.num_classes, heads.mask_conv_dim, convs, **shared
    )


def build_keypoint_head(parts: _RoIParts) -> KeypointHead:
    keypoint = parts.config.keypoint_head
    return KeypointHead(
        parts.pooler(keypoint.resolution),
        parts.features,
        parts.channels,
        keypoint.num_keypoints,
        keypoint.conv_dim,
        keypoint.num_convs,
        keypoint.score,
    )
