"""torchvision's Mask R-CNN checkpoints (`maskrcnn_resnet50_fpn`, current and legacy key names)."""

import re
from collections.abc import Callable

from torch import Tensor

from maskrcnn.config import AnchorConfig, BackboneConfig, ModelConfig
from maskrcnn.data.coco_names import COCO_CATEGORY_NAMES
from maskrcnn.interop.state_dicts import CheckpointError, load_strict, rename_key, rename_keys
from maskrcnn.modeling.mask_rcnn import MaskRCNN, build_model

# torchvision key pattern -> this project's key. Legacy files (before torchvision 0.13)
# name the FPN and RPN convs without the ".0" of their Conv2dNormActivation wrappers and
# the mask convs mask_fcn1..4.
KEY_RULES = [
    (r"^backbone\.body\.conv1\.", "backbone.trunk.stem.conv."),
    (r"^backbone\.body\.bn1\.", "backbone.trunk.stem.norm."),
    (
        r"^backbone\.body\.layer(\d)\.(\d+)\.downsample\.0\.",
        lambda m: f"backbone.trunk.res{int(m[1]) + 1}.{m[2]}.shortcut.conv.",
    ),
    (
        r"^backbone\.body\.layer(\d)\.(\d+)\.downsample\.1\.",
        lambda m: f"backbone.trunk.res{int(m[1]) + 1}.{m[2]}.shortcut.norm.",
    ),
    (
        r"^backbone\.body\.layer(\d)\.(\d+)\.conv(\d)\.",
        lambda m: f"backbone.trunk.res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.",
    ),
    (
        r"^backbone\.body\.layer(\d)\.(\d+)\.bn(\d)\.",
        lambda m: f"backbone.trunk.res{int(m[1]) + 1}.{m[2]}.norm{m[3]}.",
    ),
    (r"^backbone\.fpn\.inner_blocks\.(\d)\.(0\.)?", r"backbone.lateral.\1."),
    (r"^backbone\.fpn\.layer_blocks\.(\d)\.(0\.)?", r"backbone.output.\1."),
    (r"^rpn\.head\.conv\.(0\.0\.)?", "rpn.head.conv."),
    (r"^rpn\.head\.cls_logits\.", "rpn.head.objectness."),
    (r"^rpn\.head\.bbox_pred\.", "rpn.head.deltas."),
    (r"^roi_heads\.mask_head\.(\d)\.0\.", r"roi_heads.mask_head.convs.\1."),
    (r"^roi_heads\.mask_head\.mask_fcn(\d)\.", lambda m: f"roi_heads.mask_head.convs.{int(m[1]) - 1}."),
    (r"^roi_heads\.mask_predictor\.conv5_mask\.", "roi_heads.mask_head.deconv."),
    (r"^roi_heads\.mask_predictor\.mask_fcn_logits\.", "roi_heads.mask_head.predictor."),
    (r"^roi_heads\.box_predictor\.", "roi_heads.box_head."),
]


# This project's key -> torchvision's (the inverse of KEY_RULES), to name in errors the keys a
# file lacks as that file would have them. LEGACY_NAMES go first for files of the old layout.
TORCHVISION_NAMES = [
    (r"^backbone\.trunk\.stem\.conv\.", "backbone.body.conv1."),
    (r"^backbone\.trunk\.stem\.norm\.", "backbone.body.bn1."),
    (
        r"^backbone\.trunk\.res(\d)\.(\d+)\.shortcut\.conv\.",
        lambda m: f"backbone.body.layer{int(m[1]) - 1}.{m[2]}.downsample.0.",
    ),
    (
        r"^backbone\.trunk\.res(\d)\.(\d+)\.shortcut\.norm\.",
        lambda m: f"backbone.body.layer{int(m[1]) - 1}.{m[2]}.downsample.1.",
    ),
    (
        r"^backbone\.trunk\.res(\d)\.(\d+)\.conv(\d)\.",
        lambda m: f"backbone.body.layer{int(m[1]) - 1}.{m[2]}.conv{m[3]}.",
    ),
    (
        r"^backbone\.trunk\.res(\d)\.(\d+)\.norm(\d)\.",
        lambda m: f"backbone.body.layer{int(m[1]) - 1}.{m[2]}.bn{m[3]}.",
    ),
    (r"^backbone\.lateral\.(\d)\.", r"backbone.fpn.inner_blocks.\1.0."),
    (r"^backbone\.output\.(\d)\.", r"backbone.fpn.layer_blocks.\1.0."),
    (r"^rpn\.head\.conv\.", "rpn.head.conv.0.0."),
    (r"^rpn\.head\.objectness\.", "rpn.head.cls_logits."),
    (r"^rpn\.head\.deltas\.", "rpn.head.bbox_pred."),
    (r"^roi_heads\.mask_head\.convs\.(\d)\.", r"roi_heads.mask_head.\1.0."),
    (r"^roi_heads\.mask_head\.deconv\.", "roi_heads.mask_predictor.conv5_mask."),
    (r"^roi_heads\.mask_head\.predictor\.", "roi_heads.mask_predictor.mask_fcn_logits."),
    (r"^roi_heads\.box_head\.(cls_score|bbox_pred)\.", r"roi_heads.box_predictor.\1."),
]
LEGACY_NAMES = [
    (r"^backbone\.lateral\.(\d)\.", r"backbone.fpn.inner_blocks.\1."),
    (r"^backbone\.output\.(\d)\.", r"backbone.fpn.layer_blocks.\1."),
    (r"^rpn\.head\.conv\.", "rpn.head.conv."),
    (r"^roi_heads\.mask_head\.convs\.(\d)\.", lambda m: f"roi_heads.mask_head.mask_fcn{int(m[1]) + 1}."),
]
# Keys that only files of the legacy layout have.
_LEGACY_KEY = re.compile(
    r"^(backbone\.fpn\.(inner|layer)_blocks\.\d\.|rpn\.head\.conv\.|roi_heads\.mask_head\.mask_fcn\d\.)"
    r"(weight|bias)$"
)


def is_legacy_layout(state_dict: dict) -> bool:
    """Whether a torchvision state dict uses the key names of torchvision before 0.13."""
    return any(_LEGACY_KEY.match(key) for key in state_dict)


def torchvision_key_names(state_dict: dict) -> Callable[[str], str]:
    """This project's key -> its name in `state_dict`'s own layout (current or legacy).

    A key the file has is named as the file names it; one it lacks, as a file of that
    layout would name it.
    """
    in_file = {rename_key(key, KEY_RULES): key for key in state_dict}
    rules = LEGACY_NAMES + TORCHVISION_NAMES if is_legacy_layout(state_dict) else TORCHVISION_NAMES
    return lambda key: in_file.get(key) or rename_key(key, rules)


def is_torchvision_state_dict(state_dict: dict) -> bool:
    return isinstance(state_dict, dict) and "backbone.body.conv1.weight" in state_dict


def torchvision_config(num_classes: int = 91, class_names: tuple[str, ...] = ()) -> ModelConfig:
    """The configuration of torchvision's `maskrcnn_resnet50_fpn` (v1 architecture).

    Its COCO checkpoints were trained with FrozenBatchNorm eps 0 and with anchor strides
    derived from the padded image size (so P6's stride is not always 64).
    """
    if not class_names and num_classes == len(COCO_CATEGORY_NAMES):
        class_names = COCO_CATEGORY_NAMES
    return ModelConfig(
        num_classes=num_classes,
        class_names=tuple(class_names),
        backbone=BackboneConfig(depth=50, norm="frozen_bn", norm_eps=0.0, freeze_at=2),
        anchors=AnchorConfig(strides_from="image", round_to_integer=True),
    )


def from_torchvision(
    state_dict: dict[str, Tensor], class_names: tuple[str, ...] = (), source: str = "torchvision state dict"
) -> MaskRCNN:
    """Build a model in eval mode from a torchvision `maskrcnn_resnet50_fpn` state dict.

    The number of classes is read from the weights (91 for COCO checkpoints, whose class
    names are then the COCO names). Raises CheckpointError listing missing keys,
    unexpected keys and shape mismatches under the file's own key names.
    """
    if not is_torchvision_state_dict(state_dict):
        raise CheckpointError(
            f"{source}: not a torchvision Mask R-CNN state dict (no backbone.body.conv1.weight)"
        )
    if "roi_heads.box_predictor.cls_score.weight" not in state_dict:
        raise CheckpointError(f"{source}: missing keys: roi_heads.box_predictor.cls_score.weight")
    num_classes = int(state_dict["roi_heads.box_predictor.cls_score.weight"].shape[0])
    model = build_model(torchvision_config(num_classes, class_names))
    # Models built without pre-trained weights use trainable BatchNorm, whose step counters
    # mean nothing once the statistics are frozen.
    weights = {k: v for k, v in state_dict.items() if not k.endswith(".num_batches_tracked")}
    load_strict(model, rename_keys(weights, KEY_RULES), source, file_name=torchvision_key_names(weights))
    return model.eval()
