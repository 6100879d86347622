"""torchvision's Mask R-CNN checkpoints (`maskrcnn_resnet50_fpn`, current and legacy key names)."""

from torch import Tensor

from maskrcnn.config import AnchorConfig, BackboneConfig, ModelConfig
from maskrcnn.data.coco_names import COCO_CATEGORY_NAMES
from maskrcnn.interop.state_dicts import CheckpointError, load_strict, rename_keys
from maskrcnn.modeling.mask_rcnn import MaskRCNN, build_model

# torchvision key pattern -> this project's key. Legacy files (before torchvision 0.13)
# name the FPN and RPN convs without the ".0" of their Conv2dNormActivation wrappers and
# the mask convs mask_fcn1..4.
KEY_RULES = [
    (r"^backbone\.body\.conv1\.", "trunk.stem.conv."),
    (r"^backbone\.body\.bn1\.", "trunk.stem.norm."),
    (
        r"^backbone\.body\.layer(\d)\.(\d+)\.downsample\.0\.",
        lambda m: f"trunk.res{int(m[1]) + 1}.{m[2]}.shortcut.conv.",
    ),
    (
        r"^backbone\.body\.layer(\d)\.(\d+)\.downsample\.1\.",
        lambda m: f"trunk.res{int(m[1]) + 1}.{m[2]}.shortcut.norm.",
    ),
    (
        r"^backbone\.body\.layer(\d)\.(\d+)\.conv(\d)\.",
        lambda m: f"trunk.res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.",
    ),
    (
        r"^backbone\.body\.layer(\d)\.(\d+)\.bn(\d)\.",
        lambda m: f"trunk.res{int(m[1]) + 1}.{m[2]}.norm{m[3]}.",
    ),
    (r"^backbone\.fpn\.inner_blocks\.(\d)\.(0\.)?", r"fpn.lateral.\1."),
    (r"^backbone\.fpn\.layer_blocks\.(\d)\.(0\.)?", r"fpn.output.\1."),
    (r"^rpn\.head\.conv\.(0\.0\.)?", "rpn.head.conv."),
    (r"^rpn\.head\.cls_logits\.", "rpn.head.objectness."),
    (r"^rpn\.head\.bbox_pred\.", "rpn.head.deltas."),
    (r"^roi_heads\.mask_head\.(\d)\.0\.", r"roi_heads.mask_head.convs.\1."),
    (r"^roi_heads\.mask_head\.mask_fcn(\d)\.", lambda m: f"roi_heads.mask_head.convs.{int(m[1]) - 1}."),
    (r"^roi_heads\.mask_predictor\.conv5_mask\.", "roi_heads.mask_head.deconv."),
    (r"^roi_heads\.mask_predictor\.mask_fcn_logits\.", "roi_heads.mask_head.predictor."),
]


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
        anchors=AnchorConfig(strides=None, round_to_integer=True),
    )


def from_torchvision(
    state_dict: dict[str, Tensor], class_names: tuple[str, ...] = (), source: str = "torchvision state dict"
) -> MaskRCNN:
    """Build a model in eval mode from a torchvision `maskrcnn_resnet50_fpn` state dict.

    The number of classes is read from the weights (91 for COCO checkpoints, whose class
    names are then the COCO names). Raises CheckpointError listing missing keys,
    unexpected keys and shape mismatches.
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
    load_strict(model, rename_keys(weights, KEY_RULES), source)
    return model.eval()
