"""torchvision's Mask R-CNN and Keypoint R-CNN checkpoints (`maskrcnn_resnet50_fpn`,
`keypointrcnn_resnet50_fpn`; current and legacy key names)."""

import re
from collections.abc import Callable

from torch import Tensor

from maskrcnn.config import AnchorConfig, BackboneConfig, KeypointHeadConfig, ModelConfig
from maskrcnn.data.coco_names import COCO_CATEGORY_NAMES, COCO_PERSON_KEYPOINTS, COCO_PERSON_SKELETON
from maskrcnn.interop.state_dicts import (
    CheckpointError,
    load_strict,
    rename_key,
    rename_keys,
    without_ddp_prefix,
)
from maskrcnn.modeling.build import build_model
from maskrcnn.modeling.mask_rcnn import MaskRCNN

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
    # Keypoint R-CNN: a Sequential of conv, ReLU pairs (convs at even indices), conv_fcn1..8 before.
    (r"^roi_heads\.keypoint_head\.(\d+)\.", lambda m: f"roi_heads.keypoint_head.convs.{int(m[1]) // 2}."),
    (
        r"^roi_heads\.keypoint_head\.conv_fcn(\d)\.",
        lambda m: f"roi_heads.keypoint_head.convs.{int(m[1]) - 1}.",
    ),
    (r"^roi_heads\.keypoint_predictor\.kps_score_lowres\.", "roi_heads.keypoint_head.predictor."),
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
    (r"^roi_heads\.keypoint_head\.convs\.(\d)\.", lambda m: f"roi_heads.keypoint_head.{2 * int(m[1])}."),
    (r"^roi_heads\.keypoint_head\.predictor\.", "roi_heads.keypoint_predictor.kps_score_lowres."),
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


# torchvision's BatchNorm eps: nn.BatchNorm2d's and FrozenBatchNorm2d's default, kept by every
# model but those built with weights=COCO_V1, where torchvision calls overwrite_eps(model, 0.0).
TORCHVISION_EPS = 1e-5
COCO_V1_EPS = 0.0


def torchvision_config(
    num_classes: int = 91,
    class_names: tuple[str, ...] = (),
    masks: bool = True,
    num_keypoints: int = 0,
    norm_eps: float = COCO_V1_EPS,
) -> ModelConfig:
    """The configuration of torchvision's `maskrcnn_resnet50_fpn` (v1 architecture), or with
    num_keypoints > 0 (and usually masks=False) of its `keypointrcnn_resnet50_fpn`.

    Its COCO checkpoints were trained with FrozenBatchNorm eps 0 (norm_eps) and with anchor
    strides derived from the padded image size (so P6's stride is not always 64).
    """
    if not class_names and num_classes == len(COCO_CATEGORY_NAMES):
        class_names = COCO_CATEGORY_NAMES
    if not class_names and num_keypoints and num_classes == 2:
        class_names = ("__background__", "person")
    person = num_keypoints == len(COCO_PERSON_KEYPOINTS)
    return ModelConfig(
        num_classes=num_classes,
        class_names=tuple(class_names),
        backbone=BackboneConfig(depth=50, norm="frozen_bn", norm_eps=norm_eps, freeze_at=2),
        anchors=AnchorConfig(strides_from="image", round_to_integer=True),
        masks=masks,
        keypoints=num_keypoints > 0,
        keypoint_head=KeypointHeadConfig(
            num_keypoints=num_keypoints or KeypointHeadConfig.num_keypoints,
            names=COCO_PERSON_KEYPOINTS if person else (),
            skeleton=COCO_PERSON_SKELETON if person else (),
        ),
    )


def check_norm_eps(norm_eps: float | None) -> None:
    """ValueError unless norm_eps is None (read from the weights) or a number >= 0."""
    if norm_eps is not None and not (isinstance(norm_eps, (int, float)) and norm_eps >= 0):  # NaN fails
        raise ValueError(f"norm_eps={norm_eps!r}: expected a number >= 0 (torchvision's are 0 and 1e-5)")


def from_torchvision(
    state_dict: dict[str, Tensor],
    class_names: tuple[str, ...] = (),
    source: str = "torchvision state dict",
    norm_eps: float | None = None,
) -> MaskRCNN:
    """Build a model in eval mode from a torchvision `maskrcnn_resnet50_fpn` or
    `keypointrcnn_resnet50_fpn` state dict.

    The number of classes, whether there is a mask head and the number of keypoints are read
    from the weights (91 classes for COCO Mask R-CNN checkpoints, whose class names are then
    the COCO names; 17 keypoints get COCO's person keypoint names and skeleton). Raises
    CheckpointError listing missing keys, unexpected keys and shape mismatches under the file's
    own key names.

    norm_eps: the eps of the BatchNorm the weights were trained with. None: 1e-5 for a state
    dict with `num_batches_tracked` entries (a model built without pre-trained weights, whose
    nn.BatchNorm2d has eps 1e-5), else 0, COCO_V1's and its fine-tuned models'. A model
    fine-tuned from an ImageNet trunk (`weights_backbone=...`) has FrozenBatchNorm eps 1e-5,
    which its file cannot tell from those: give norm_eps=1e-5.
    """
    state_dict = without_ddp_prefix(state_dict)
    if not is_torchvision_state_dict(state_dict):
        raise CheckpointError(
            f"{source}: not a torchvision Mask R-CNN state dict (no backbone.body.conv1.weight)"
        )
    check_norm_eps(norm_eps)
    if "roi_heads.box_predictor.cls_score.weight" not in state_dict:
        raise CheckpointError(f"{source}: missing keys: roi_heads.box_predictor.cls_score.weight")
    num_classes = int(state_dict["roi_heads.box_predictor.cls_score.weight"].shape[0])
    masks = any(key.startswith("roi_heads.mask_") for key in state_dict)
    keypoints = state_dict.get("roi_heads.keypoint_predictor.kps_score_lowres.weight")
    num_keypoints = int(keypoints.shape[1]) if keypoints is not None and keypoints.dim() == 4 else 0
    # Models built without pre-trained weights use trainable BatchNorm (eps 1e-5), whose step
    # counters say so and mean nothing once the statistics are frozen.
    weights = {k: v for k, v in state_dict.items() if not k.endswith(".num_batches_tracked")}
    if norm_eps is None:
        norm_eps = TORCHVISION_EPS if len(weights) < len(state_dict) else COCO_V1_EPS
    model = build_model(torchvision_config(num_classes, class_names, masks, num_keypoints, norm_eps))
    load_strict(model, rename_keys(weights, KEY_RULES), source, file_name=torchvision_key_names(weights))
    return model.eval()


def from_torchvision_keypoint(
    state_dict: dict[str, Tensor],
    class_names: tuple[str, ...] = (),
    source: str = "torchvision state dict",
    norm_eps: float | None = None,
) -> MaskRCNN:
    """`from_torchvision` for a `keypointrcnn_resnet50_fpn` state dict, refusing one without a
    keypoint head."""
    state_dict = without_ddp_prefix(state_dict)
    if "roi_heads.keypoint_predictor.kps_score_lowres.weight" not in state_dict:
        raise CheckpointError(
            f"{source}: not a torchvision Keypoint R-CNN state dict "
            "(no roi_heads.keypoint_predictor.kps_score_lowres.weight)"
        )
    return from_torchvision(state_dict, class_names, source, norm_eps)
