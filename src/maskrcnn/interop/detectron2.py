"""detectron2's model-zoo files: Mask R-CNN R50/R101/X101-FPN, R50-C4 and Keypoint R-CNN R50-FPN.

Two formats: a `.pkl`, a pickled dict whose "model" maps names to numpy arrays (read by the
restricted unpickler of interop/safe_pickle.py, which builds dicts, lists, strings, numbers
and numpy arrays and refuses everything else), and a `.pth` checkpoint of detectron2's
trainer, whose "model" holds tensors (read by torch.load(weights_only=True) like every other
torch file).

detectron2's conventions differ from this project's; loading converts the weights and says
the rest in the model's config:

- classes: 80 foreground classes and the background last -> the background first (class
  scores reordered; the box deltas and the masks of the background are zero rows);
- anchors: detectron2 orders a location's anchors size-major, this project ratio-major:
  the RPN's objectness and delta channels are permuted where a map has several sizes (C4);
- input: BGR, mean (103.53, 116.28, 123.675) and std 1 on the 0-255 scale (ResNeXt: std
  (57.375, 57.12, 58.395)) -> `input.channel_order: bgr` and the same statistics / 255;
  sides resized with rounding (`input.resize_rounding: round`);
- the trunk: stride in each block's first 1x1 conv for the MSRA ResNets, in the 3x3 for
  ResNeXt (`backbone.stride_in_1x1`; the weights cannot tell, groups == 1 decides), FrozenBN
  eps 1e-5; RoIAlign aligned with adaptive sampling; anchors not rounded; masks pasted as
  detectron2 pastes them (`roi_heads.mask_paste: detectron2`); the RPN's and the box
  head's settings of detectron2's Base-RCNN-FPN / Base-RCNN-C4 configs.
"""

import re
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

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
from maskrcnn.interop.state_dicts import CheckpointError, check_fit, load_strict, rename_key
from maskrcnn.modeling.build import build_model
from maskrcnn.modeling.mask_rcnn import MaskRCNN

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
# Entries of detectron2 files that are no weights of the network: its input statistics (read
# for the config) and, in older files, the anchors and BatchNorm's step counters.
_NOT_WEIGHTS = re.compile(
    r"^(pixel_mean|pixel_std|proposal_generator\.anchor_generator\..*)$|num_batches_tracked$"
)


def _layer(name: str, norm: str | None) -> str:
    """A bottleneck's layer as detectron2 names it (conv1..conv3, shortcut; `norm` set for
    the norm inside it) -> this project's name, with a trailing dot."""
    if name == "shortcut":
        return "shortcut.norm." if norm else "shortcut.conv."
    return f"norm{name[-1]}." if norm else f"{name}."


def _their_layer(name: str) -> str:
    """The inverse of `_layer`: conv2 -> conv2., norm2 -> conv2.norm., shortcut.conv -> shortcut., ..."""
    if name.startswith("shortcut"):
        return "shortcut.norm." if name.endswith("norm") else "shortcut."
    return f"conv{name[-1]}.norm." if name.startswith("norm") else f"{name}."


# detectron2 key pattern -> this project's key. The FPN models keep the trunk under
# backbone.bottom_up, the C4 models under backbone (res2-res4) and roi_heads.res5.
KEY_RULES = [
    (
        r"^backbone\.(?:bottom_up\.)?stem\.conv1\.(norm\.)?",
        lambda m: "backbone.trunk.stem." + ("norm." if m[1] else "conv."),
    ),
    (
        r"^backbone\.(?:bottom_up\.)?res(\d)\.(\d+)\.(conv\d|shortcut)\.(norm\.)?",
        lambda m: f"backbone.trunk.res{m[1]}.{m[2]}.{_layer(m[3], m[4])}",
    ),
    (
        r"^roi_heads\.res5\.(\d+)\.(conv\d|shortcut)\.(norm\.)?",
        lambda m: f"roi_heads.box_head.res5.{m[1]}.{_layer(m[2], m[3])}",
    ),
    (r"^backbone\.fpn_lateral(\d)\.", lambda m: f"backbone.lateral.{int(m[1]) - 2}."),
    (r"^backbone\.fpn_output(\d)\.", lambda m: f"backbone.output.{int(m[1]) - 2}."),
    (r"^proposal_generator\.rpn_head\.conv\.", "rpn.head.conv."),
    (r"^proposal_generator\.rpn_head\.objectness_logits\.", "rpn.head.objectness."),
    (r"^proposal_generator\.rpn_head\.anchor_deltas\.", "rpn.head.deltas."),
    (r"^roi_heads\.box_head\.fc(\d)\.", lambda m: f"roi_heads.box_head.fc{int(m[1]) + 5}."),
    (r"^roi_heads\.box_predictor\.", "roi_heads.box_head."),
    (r"^roi_heads\.mask_head\.mask_fcn(\d)\.", lambda m: f"roi_heads.mask_head.convs.{int(m[1]) - 1}."),
    (
        r"^roi_heads\.keypoint_head\.conv_fcn(\d+)\.",
        lambda m: f"roi_heads.keypoint_head.convs.{int(m[1]) - 1}.",
    ),
    (r"^roi_heads\.keypoint_head\.score_lowres\.", "roi_heads.keypoint_head.predictor."),
]


def detectron2_names(kind: str) -> list[tuple[str, object]]:
    """This project's key -> detectron2's (the inverse of KEY_RULES) for a model of `kind`
    ("fpn" or "c4"), to name keys as a detectron2 file has them."""
    trunk = "backbone.bottom_up." if kind == "fpn" else "backbone."
    return [
        (
            r"^backbone\.trunk\.stem\.(conv|norm)\.",
            lambda m: f"{trunk}stem.conv1." + ("norm." if m[1] == "norm" else ""),
        ),
        (
            r"^backbone\.trunk\.res(\d)\.(\d+)\.(conv\d|norm\d|shortcut\.conv|shortcut\.norm)\.",
            lambda m: f"{trunk}res{m[1]}.{m[2]}.{_their_layer(m[3])}",
        ),
        (
            r"^roi_heads\.box_head\.res5\.(\d+)\.(conv\d|norm\d|shortcut\.conv|shortcut\.norm)\.",
            lambda m: f"roi_heads.res5.{m[1]}.{_their_layer(m[2])}",
        ),
        (r"^backbone\.lateral\.(\d)\.", lambda m: f"backbone.fpn_lateral{int(m[1]) + 2}."),
        (r"^backbone\.output\.(\d)\.", lambda m: f"backbone.fpn_output{int(m[1]) + 2}."),
        (r"^rpn\.head\.conv\.", "proposal_generator.rpn_head.conv."),
        (r"^rpn\.head\.objectness\.", "proposal_generator.rpn_head.objectness_logits."),
        (r"^rpn\.head\.deltas\.", "proposal_generator.rpn_head.anchor_deltas."),
        (r"^roi_heads\.box_head\.fc(\d)\.", lambda m: f"roi_heads.box_head.fc{int(m[1]) - 5}."),
        (r"^roi_heads\.box_head\.(cls_score|bbox_pred)\.", r"roi_heads.box_predictor.\1."),
        (r"^roi_heads\.mask_head\.convs\.(\d)\.", lambda m: f"roi_heads.mask_head.mask_fcn{int(m[1]) + 1}."),
        (
            r"^roi_heads\.keypoint_head\.convs\.(\d+)\.",
            lambda m: f"roi_heads.keypoint_head.conv_fcn{int(m[1]) + 1}.",
        ),
        (r"^roi_heads\.keypoint_head\.predictor\.", "roi_heads.keypoint_head.score_lowres."),
    ]


def is_detectron2_state_dict(state_dict) -> bool:
    """Whether `state_dict` has the key names of a detectron2 R-CNN (FPN or C4)."""
    return isinstance(state_dict, dict) and (FPN_MARK in state_dict or C4_MARK in state_dict)


def is_detectron2_trunk(state_dict) -> bool:
    """Whether `state_dict` is a trunk alone in detectron2's names (stem.conv1, res2..res5: its
    ImageNet files converted from torchvision)."""
    return (
        isinstance(state_dict, dict)
        and "stem.conv1.weight" in state_dict
        and "res2.0.conv1.weight" in state_dict
    )


def detectron2_weights_of(payload, source: str) -> dict[str, Tensor] | None:
    """The weights of a detectron2 file's contents as tensors, or None when the contents are not
    detectron2's. They sit under "model" (the model zoo's .pkl and detectron2's checkpoints) or
    are the whole dict. numpy arrays become tensors; any other entry is a CheckpointError."""
    weights = payload.get("model") if isinstance(payload, dict) and "model" in payload else payload
    if not (is_detectron2_state_dict(weights) or is_detectron2_trunk(weights)):
        return None
    tensors = {}
    for key, value in weights.items():
        if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
            # Arrays rebuilt from a bytes buffer are read-only, which torch.from_numpy warns about.
            array = value if value.flags.writeable else value.copy()
            value = torch.from_numpy(np.ascontiguousarray(array))
        if not isinstance(key, str) or not isinstance(value, Tensor):
            what = (
                f"a numpy array of {value.dtype}" if isinstance(value, np.ndarray) else type(value).__name__
            )
            raise CheckpointError(f"{source}: not a state dict: entry {key!r} holds {what}, not numbers")
        tensors[key] = value
    return tensors


def _kind(weights: dict) -> str:
    return "fpn" if FPN_MARK in weights or any(k.startswith("backbone.fpn_") for k in weights) else "c4"


def detectron2_config(weights: dict, source: str = "detectron2 weights") -> ModelConfig:
    """The configuration of the model in detectron2 `weights` (its names, tensor shapes):
    FPN or C4, the trunk's depth (blocks per stage; 6 in res4: 50, 23: 101), groups and widths
    (ResNeXt from conv2's shape), classes, masks and keypoints, the heads' widths; and
    detectron2's conventions (see the module's docstring).

    Raises CheckpointError for a detectron2 model of another design (e.g. DC5: res5 in the
    backbone without FPN). Keys the file lacks leave the usual values; loading lists them.
    """
    kind = _kind(weights)
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


def anchor_order(num_sizes: int, num_ratios: int) -> list[int]:
    """For each anchor of a location in this project's order (ratio-major: index r * S + s),
    its index in detectron2's (size-major: s * R + r)."""
    return [size * num_ratios + ratio for ratio in range(num_ratios) for size in range(num_sizes)]


def _delta_rows(order: list[int]) -> list[int]:
    """The 4 delta channels (dx, dy, dw, dh) of each anchor follow it: A*4 rows from an anchor order."""
    return [4 * anchor + coordinate for anchor in order for coordinate in range(4)]


def _anchors_per_location(config: AnchorConfig, kind: str) -> tuple[int, int]:
    """(sizes, ratios) of one location: all sizes on C4's single map, one per FPN level."""
    return (len(config.sizes) if kind == "c4" else 1), len(config.aspect_ratios)


def from_detectron2_layout(
    weights: dict[str, Tensor], anchors: AnchorConfig | None = None
) -> tuple[dict[str, Tensor], Callable[[str], str]]:
    """detectron2 weights -> (this project's keys and conventions, our key -> its name in the file).

    Classes: the background row of the class scores moves from last to first; the
    class-specific box deltas and masks get zero rows for the background. The RPN's channels follow
    this project's anchor order (`anchor_order`) when a location has several sizes, with the
    sizes and ratios of `anchors` (default: detectron2's, as `detectron2_config` gives).
    Entries that are no weights (pixel statistics, anchors, step counters) are left out.
    A key of the model the file lacks is named as a detectron2 file would name it.
    """
    trunk_only = is_detectron2_trunk(weights) and not is_detectron2_state_dict(weights)
    # A trunk alone is read as an FPN model's (backbone.bottom_up), the prefix dropped in its names.
    kind = "fpn" if trunk_only else _kind(weights)
    renamed, in_file = {}, {}
    for key, value in weights.items():
        if _NOT_WEIGHTS.search(key) or (trunk_only and key.startswith("stem.fc.")):
            continue
        ours = rename_key(f"backbone.bottom_up.{key}" if trunk_only else key, KEY_RULES)
        renamed[ours] = value
        in_file[ours] = key
    renamed = _to_our_conventions(renamed, anchors or detectron2_config_anchors(), kind)
    names = detectron2_names(kind)

    def file_name(key: str) -> str:
        name = in_file.get(key) or rename_key(key, names)
        return name.removeprefix("backbone.bottom_up.") if trunk_only else name

    return renamed, file_name


def detectron2_config_anchors() -> AnchorConfig:
    """The anchors of detectron2's configs: sizes 32-512, ratios 0.5, 1, 2, not rounded."""
    return AnchorConfig(sizes=(32, 64, 128, 256, 512), aspect_ratios=(0.5, 1.0, 2.0), round_to_integer=False)


CLS_SCORE = "roi_heads.box_head.cls_score."
BBOX_PRED = "roi_heads.box_head.bbox_pred."
MASK_PREDICTOR = "roi_heads.mask_head.predictor."
RPN_OBJECTNESS = "rpn.head.objectness."
RPN_DELTAS = "rpn.head.deltas."


def _to_our_conventions(weights: dict[str, Tensor], anchors: AnchorConfig, kind: str) -> dict[str, Tensor]:
    """detectron2's conventions -> ours, on weights already under our keys (see
    `from_detectron2_layout`); entries whose shapes do not follow detectron2's layout are left
    as they are, for the loader to report."""
    weights = dict(weights)
    scores = weights.get(CLS_SCORE + "weight")
    classes = scores.shape[0] if scores is not None and scores.dim() == 2 else None
    for part in ("weight", "bias"):
        cls_key, box_key, mask_key = CLS_SCORE + part, BBOX_PRED + part, MASK_PREDICTOR + part
        if classes and cls_key in weights and weights[cls_key].shape[0] == classes:
            value = weights[cls_key]
            weights[cls_key] = torch.cat((value[-1:], value[:-1]))
        if classes and box_key in weights and weights[box_key].shape[0] == 4 * (classes - 1):
            value = weights[box_key]
            weights[box_key] = torch.cat((value.new_zeros((4, *value.shape[1:])), value))
        # One mask per foreground class (a class-agnostic head's one mask stays as it is).
        if classes and mask_key in weights and weights[mask_key].shape[0] == classes - 1:
            value = weights[mask_key]
            weights[mask_key] = torch.cat((value.new_zeros((1, *value.shape[1:])), value))
    sizes, ratios = _anchors_per_location(anchors, kind)
    order = anchor_order(sizes, ratios)
    if sizes > 1:
        for part in ("weight", "bias"):
            objectness, deltas = RPN_OBJECTNESS + part, RPN_DELTAS + part
            if objectness in weights and weights[objectness].shape[0] == len(order):
                weights[objectness] = weights[objectness][order]
            if deltas in weights and weights[deltas].shape[0] == 4 * len(order):
                weights[deltas] = weights[deltas][_delta_rows(order)]
    return weights


def to_detectron2(state_dict: dict[str, Tensor], config: ModelConfig) -> dict[str, Tensor]:
    """A state dict of this project's model of `config` in detectron2's layout: its key names,
    the background class last (its zero box and mask rows dropped), anchors size-major.
    The inverse of `from_detectron2_layout` for the designs detectron2 has (FPN, C4)."""
    kind = config.backbone.kind
    if kind not in ("fpn", "c4"):
        raise ValueError(f"detectron2 has no {kind!r} model; only fpn and c4 are written in its layout")
    weights = dict(state_dict)
    agnostic_mask = config.roi_heads.mask_loss == "agnostic"
    for part in ("weight", "bias"):
        cls_key, box_key, mask_key = CLS_SCORE + part, BBOX_PRED + part, MASK_PREDICTOR + part
        if cls_key in weights:
            weights[cls_key] = torch.cat((weights[cls_key][1:], weights[cls_key][:1]))
        if box_key in weights:
            weights[box_key] = weights[box_key][4:]
        if mask_key in weights and not agnostic_mask:
            weights[mask_key] = weights[mask_key][1:]
    sizes, ratios = _anchors_per_location(config.anchors, kind)
    if sizes > 1:
        order = anchor_order(sizes, ratios)
        inverse = sorted(range(len(order)), key=order.__getitem__)
        for part in ("weight", "bias"):
            weights[RPN_OBJECTNESS + part] = weights[RPN_OBJECTNESS + part][inverse]
            weights[RPN_DELTAS + part] = weights[RPN_DELTAS + part][_delta_rows(inverse)]
    names = detectron2_names(kind)
    return {rename_key(key, names): value for key, value in weights.items()}


def from_detectron2(
    weights: dict[str, Tensor], config: ModelConfig | None = None, source: str = "detectron2 weights"
) -> MaskRCNN:
    """A model in eval mode from detectron2 weights (tensors under detectron2's names).

    config: the model to build; default `detectron2_config(weights)`, the model the file holds
    with detectron2's conventions. Raises CheckpointError listing every missing key,
    unexpected key and shape mismatch under the file's names and in its layout.
    """
    if is_detectron2_trunk(weights) and not is_detectron2_state_dict(weights):
        raise CheckpointError(
            f"{source}: a detectron2 trunk alone (stem, res2-res5), not a detection model; training "
            "takes it as init_weights="
        )
    if not is_detectron2_state_dict(weights):
        raise CheckpointError(f"{source}: not a detectron2 R-CNN state dict (no {FPN_MARK} nor {C4_MARK})")
    config = config if config is not None else detectron2_config(weights, source)
    if config.backbone.kind not in ("fpn", "c4"):
        raise CheckpointError(
            f"{source}: detectron2 weights are FPN or C4 models; the config asks for model.backbone.kind="
            f"{config.backbone.kind}"
        )
    model = build_model(config)
    expected = {key: tuple(value.shape) for key, value in to_detectron2(model.state_dict(), config).items()}
    given = {key: tuple(value.shape) for key, value in weights.items() if not _NOT_WEIGHTS.search(key)}
    check_fit(expected, given, source)
    converted, file_name = from_detectron2_layout(weights, config.anchors)
    load_strict(model, converted, source, file_name=file_name)
    return model.eval()


# The settings that say how the trunk's weights compute and what input they expect.
CONVENTIONS = ("backbone.stride_in_1x1", "input.channel_order", "input.pixel_mean", "input.pixel_std")


def conventions_differing(model: ModelConfig, weights: dict[str, Tensor]) -> list[str]:
    """The settings of CONVENTIONS in which `model` differs from the model of detectron2
    `weights`, as "key=value the weights were trained with" (empty when they agree)."""
    trained = detectron2_config(weights)
    differing = []
    for key in CONVENTIONS:
        section, name = key.split(".")
        theirs = getattr(getattr(trained, section), name)
        ours = getattr(getattr(model, section), name)
        if isinstance(theirs, tuple):
            same = len(theirs) == len(ours) and all(abs(a - b) < 1e-6 for a, b in zip(theirs, ours))
            shown = "[" + ", ".join(f"{v:.6g}" for v in theirs) + "]"
        else:
            same, shown = theirs == ours, str(theirs).lower()
        if not same:
            differing.append(f"model.{key}={shown}")
    return differing
