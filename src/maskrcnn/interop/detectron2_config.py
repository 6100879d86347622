"""The configuration of the model a detectron2 file holds, read from its names and tensor
shapes, with detectron2's conventions (BGR input and its pixel statistics, rounded resizing,
FrozenBN, aligned RoIAlign, the RPN and box-head settings of its Base-RCNN-FPN / Base-RCNN-C4
configs): see interop/detectron2.py for the conversion of the weights themselves."""

import re

from maskrcnn.config import (
    AnchorConfig,
    BackboneConfig,
    InputConfig,
    KeypointHeadConfig,
    ModelConfig,
    RoIHeadsConfig,
    RPNConfig,
)
from maskrcnn.data.coco_names import COCO_CATEGORY_NAMES, COCO_PERSON_KEYPOINTS, COCO_PERSON_SKELETON
from maskrcnn.interop.state_dicts import CheckpointError

# detectron2's pixel statistics on the 0-255 scale, in its B, G, R channel order: the MSRA
# ResNets' (std 1) and the FAIR ResNeXts' of its X101 configs.
PIXEL_MEAN_BGR = (103.53, 116.28, 123.675)
PIXEL_STD_MSRA = (1.0, 1.0, 1.0)
PIXEL_STD_RESNEXT = (57.375, 57.12, 58.395)

# COCO's 80 categories as detectron2 numbers them (0..79, ascending category id) and their ids.
COCO_CONTIGUOUS_IDS = tuple(i for i, name in enumerate(COCO_CATEGORY_NAMES) if i and name != "N/A")
COCO_CONTIGUOUS_NAMES = tuple(COCO_CATEGORY_NAMES[i] for i in COCO_CONTIGUOUS_IDS)

FPN_MARK = "backbone.bottom_up.stem.conv1.weight"
C4_MARK = "backbone.stem.conv1.weight"


def model_kind(weights: dict) -> str:
    """ "fpn" or "c4": the design of the detectron2 model in `weights`."""
    return "fpn" if FPN_MARK in weights or any(k.startswith("backbone.fpn_") for k in weights) else "c4"


def detectron2_config(weights: dict, source: str = "detectron2 weights") -> ModelConfig:
    """The configuration of the model in detectron2 `weights` (its names, tensor shapes):
    FPN or C4, the trunk's depth (blocks per stage; 6 in res4: 50, 23: 101), groups and widths
    (ResNeXt from conv2's shape), classes, masks and keypoints, the heads' widths; and
    detectron2's conventions (see the module's docstring).

    Raises CheckpointError for a detectron2 model of another design (e.g. DC5: res5 in the
    backbone without FPN). Keys the file lacks leave the usual values; loading lists them.
    """
    kind = model_kind(weights)
    if kind == "c4" and not any(k.startswith("roi_heads.res5.") for k in weights):
        raise CheckpointError(
            f"{source}: a detectron2 model neither FPN (backbone.fpn_lateral2-5) nor C4 (roi_heads.res5); "
            "only these two designs are read"
        )
    shapes = _Shapes(weights)
    backbone = _backbone_config(shapes, kind)
    cls_score = shapes("roi_heads.box_predictor.cls_score.weight")
    num_classes = cls_score[0] if cls_score else len(COCO_CONTIGUOUS_IDS) + 1
    keypoints = shapes.any("roi_heads.keypoint_head.")
    if num_classes == len(COCO_CONTIGUOUS_IDS) + 1:
        class_names, category_ids = ("__background__", *COCO_CONTIGUOUS_NAMES), COCO_CONTIGUOUS_IDS
    elif keypoints and num_classes == 2:
        class_names, category_ids = ("__background__", "person"), (1,)
    else:
        class_names, category_ids = (), ()
    return ModelConfig(
        num_classes=num_classes,
        class_names=class_names,
        category_ids=category_ids,
        backbone=backbone,
        anchors=detectron2_config_anchors(),
        rpn=_rpn_config(kind, keypoints),
        roi_heads=_roi_heads_config(shapes, kind, backbone.fpn_channels, num_classes),
        input=_input_config(weights, backbone.groups, kind, source),
        masks=shapes.any("roi_heads.mask_head."),
        keypoints=keypoints,
        keypoint_head=_keypoint_head_config(shapes) if keypoints else KeypointHeadConfig(),
    )


class _Shapes:
    """The shapes of a detectron2 state dict's tensors, by name."""

    def __init__(self, weights: dict):
        self.weights = weights

    def __call__(self, key: str) -> tuple[int, ...] | None:
        return tuple(self.weights[key].shape) if key in self.weights else None

    def any(self, prefix: str) -> bool:
        return any(k.startswith(prefix) for k in self.weights)

    def indices(self, prefix: str, position: int) -> set[str]:
        """The distinct `position`-th dotted parts of the names under `prefix`."""
        return {k.split(".")[position] for k in self.weights if k.startswith(prefix)}


def _backbone_config(shape: _Shapes, kind: str) -> BackboneConfig:
    trunk = "backbone.bottom_up." if kind == "fpn" else "backbone."
    stages = [f"{trunk}res{s}." for s in (2, 3, 4)] + [
        f"{trunk}res5." if kind == "fpn" else "roi_heads.res5."
    ]
    default_blocks = (3, 4, 6, 3)
    blocks, channels = [], []
    for index, stage in enumerate(stages):
        found = {int(m[1]) for k in shape.weights if (m := re.match(rf"{re.escape(stage)}(\d+)\.", k))}
        blocks.append(max(found) + 1 if found else default_blocks[index])
        conv3 = shape(f"{stage}0.conv3.weight")
        channels.append(conv3[0] if conv3 else BackboneConfig.stage_channels[index])
    blocks = tuple(blocks)
    depth = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101}.get(blocks)
    conv2 = shape(f"{trunk}res2.0.conv2.weight")
    groups = conv2[0] // conv2[1] if conv2 and len(conv2) == 4 and conv2[1] else 1
    stem, lateral = shape(f"{trunk}stem.conv1.weight"), shape("backbone.fpn_lateral2.weight")
    return BackboneConfig(
        depth=depth or 50,
        stage_blocks=None if depth else blocks,
        groups=groups,
        width_per_group=conv2[0] // groups if conv2 else BackboneConfig.width_per_group,
        stage_channels=tuple(channels),
        stem_channels=stem[0] if stem else BackboneConfig.stem_channels,
        norm="frozen_bn",
        norm_eps=1e-5,
        freeze_at=2,
        # MSRA's ResNets put the stride in the first 1x1 conv, the ResNeXts of detectron2's
        # configs in the 3x3 (STRIDE_IN_1X1 false): the weights' shapes are the same.
        stride_in_1x1=groups == 1,
        fpn_channels=lateral[0] if lateral else BackboneConfig.fpn_channels,
        kind=kind,
    )


def _roi_heads_config(shape: _Shapes, kind: str, fpn_channels: int, num_classes: int) -> RoIHeadsConfig:
    deconv = shape("roi_heads.mask_head.deconv.weight")
    mask_predictor = shape("roi_heads.mask_head.predictor.weight")
    fc1 = shape("roi_heads.box_head.fc1.weight")
    box_resolution = 7 if kind == "fpn" else 14
    if kind == "fpn" and fc1 and len(fc1) == 2:
        side = round((fc1[1] / fpn_channels) ** 0.5)
        box_resolution = side if side * side * fpn_channels == fc1[1] else box_resolution
    agnostic = mask_predictor and mask_predictor[0] == 1 and num_classes > 2
    return RoIHeadsConfig(
        pooler="align",
        sampling_ratio=0,
        aligned=True,
        box_resolution=box_resolution,
        mask_resolution=14,
        fc_dim=fc1[0] if fc1 else RoIHeadsConfig.fc_dim,
        mask_conv_dim=deconv[1] if deconv and len(deconv) == 4 else RoIHeadsConfig.mask_conv_dim,
        mask_num_convs=len(shape.indices("roi_heads.mask_head.mask_fcn", 2)) if kind == "fpn" else 0,
        mask_loss="agnostic" if agnostic else "sigmoid",
        batch_size_per_image=512,
        positive_fraction=0.25,
        score_threshold=0.05,
        nms_threshold=0.5,
        detections_per_image=100,
        mask_threshold=0.5,
        mask_paste="detectron2",
        empty_boxes="detectron2",  # kept through NMS and the cap, dropped after
    )


def _rpn_config(kind: str, keypoints: bool) -> RPNConfig:
    if kind == "fpn":  # Base-RCNN-FPN.yaml (Base-Keypoint-RCNN-FPN: 1500 proposals in training)
        return RPNConfig(
            pre_nms_topk_train=2000,
            pre_nms_topk_test=1000,
            post_nms_topk_train=1500 if keypoints else 1000,
            post_nms_topk_test=1000,
            min_box_size=0.0,  # PROPOSAL_GENERATOR.MIN_SIZE: only empty proposals are dropped
        )
    return RPNConfig(  # Base-RCNN-C4.yaml and detectron2's defaults
        pre_nms_topk_train=12000,
        pre_nms_topk_test=6000,
        post_nms_topk_train=2000,
        post_nms_topk_test=1000,
        min_box_size=0.0,
    )


def _keypoint_head_config(shape: _Shapes) -> KeypointHeadConfig:
    score = shape("roi_heads.keypoint_head.score_lowres.weight")
    first = shape("roi_heads.keypoint_head.conv_fcn1.weight")
    count = score[1] if score and len(score) == 4 else KeypointHeadConfig.num_keypoints
    person = count == len(COCO_PERSON_KEYPOINTS)
    return KeypointHeadConfig(
        num_keypoints=count,
        names=COCO_PERSON_KEYPOINTS if person else (),
        skeleton=COCO_PERSON_SKELETON if person else (),
        resolution=14,
        conv_dim=first[0] if first else KeypointHeadConfig.conv_dim,
        num_convs=len(shape.indices("roi_heads.keypoint_head.conv_fcn", 2)),
        score="probability",  # pred_keypoints[..., 2], the score detectron2 publishes
    )


def _input_config(weights: dict, groups: int, kind: str, source: str) -> InputConfig:
    """detectron2's input: BGR, its statistics (the file's own when it stores them, else its
    configs' for the trunk) on the [0, 1] scale, short side 800 and long side <= 1333 rounded;
    FPN pads to a multiple of 32, C4 not at all."""
    mean, std = PIXEL_MEAN_BGR, PIXEL_STD_MSRA if groups == 1 else PIXEL_STD_RESNEXT
    stored = {}
    for key in ("pixel_mean", "pixel_std"):
        if key in weights:
            values = weights[key].reshape(-1)
            if values.numel() != 3:
                raise CheckpointError(f"{source}: {key} has {values.numel()} values, expected 3 (B, G, R)")
            stored[key] = tuple(float(v) for v in values)
    mean, std = stored.get("pixel_mean", mean), stored.get("pixel_std", std)
    return InputConfig(
        min_size=800,
        max_size=1333,
        pixel_mean=tuple(v / 255 for v in mean),
        pixel_std=tuple(v / 255 for v in std),
        size_divisibility=32 if kind == "fpn" else 1,
        channels=3,
        channel_order="bgr",
        resize_rounding="round",
    )


def detectron2_config_anchors() -> AnchorConfig:
    """The anchors of detectron2's configs: sizes 32-512, ratios 0.5, 1, 2, not rounded."""
    return AnchorConfig(sizes=(32, 64, 128, 256, 512), aspect_ratios=(0.5, 1.0, 2.0), round_to_integer=False)
