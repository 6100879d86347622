"""Initial weights for training: an ImageNet trunk, or a whole model to fine-tune."""

import warnings
from collections.abc import Callable

from maskrcnn.checkpoint import is_checkpoint
from maskrcnn.config import ModelConfig
from maskrcnn.interop.detectron2 import (
    conventions_differing,
    detectron2_weights_of,
    from_detectron2_layout,
    is_detectron2_state_dict,
)
from maskrcnn.interop.load import read_weights_file
from maskrcnn.interop.state_dicts import CheckpointError, rename_keys
from maskrcnn.interop.torchvision import KEY_RULES, is_torchvision_state_dict, torchvision_key_names
from maskrcnn.modeling.mask_rcnn import MaskRCNN, upgrade_state_dict


def torchvision_resnet_to_trunk(state_dict: dict) -> dict:
    """A torchvision classification ResNet/ResNeXt state dict -> our `backbone.trunk.*` keys (fc dropped)."""
    prefixed = {f"backbone.body.{k}": v for k, v in state_dict.items() if not k.startswith("fc.")}
    return {
        k: v for k, v in rename_keys(prefixed, KEY_RULES).items() if not k.endswith("num_batches_tracked")
    }


TRUNK = "backbone.trunk."
STEM_CONV = TRUNK + "stem.conv.weight"


def adapt_stem(weights: dict, own: dict, path: str) -> dict:
    """An RGB stem convolution (F, 3, 7, 7) in `weights` made to fit a model of C input channels.

    C = 1: the sum of the RGB filters, so a gray image (R = G = B) gets the response the RGB
    trunk gave it. C > 1: the RGB filters repeated cyclically to C and scaled by 3 / C, which
    keeps the response's scale (exactly, for an image equal in all channels, when C is a
    multiple of 3). Warns (UserWarning) when it adapts; `weights` is
    returned unchanged when nothing needs adapting.
    """
    if STEM_CONV not in weights or STEM_CONV not in own:
        return weights
    rgb, channels = weights[STEM_CONV], own[STEM_CONV].shape[1]
    if rgb.dim() != 4 or rgb.shape[1] != 3 or channels == 3:
        return weights
    if channels == 1:
        adapted, how = rgb.sum(dim=1, keepdim=True), "the sum of its RGB filters"
    else:
        adapted = rgb[:, [i % 3 for i in range(channels)]] * (3 / channels)
        how = f"its RGB filters repeated to {channels} channels and scaled by 3/{channels}"
    warnings.warn(
        f"{path}: the stem's first convolution takes 3 channels (RGB) but this model takes {channels} "
        f"(model.input.channels): it starts from {how}; model.input.pixel_mean and pixel_std "
        "normalize each channel",
        UserWarning,
        stacklevel=3,
    )
    return {**weights, STEM_CONV: adapted}


# C4 runs the trunk's last stage per RoI, as its box head: a trunk's res5 weights go there.
C4_RES5 = (TRUNK + "res5.", "roi_heads.box_head.res5.")


def relocate_res5(weights: dict, own: dict, file_name: Callable[[str], str]) -> tuple[dict, Callable]:
    """`weights` with a trunk's res5 moved to the C4 box head when `own` (the model's state
    dict) keeps res5 there, and the key -> file name mapping that follows the move."""
    trunk_res5, head_res5 = C4_RES5
    if any(k.startswith(trunk_res5) for k in own) or not any(k.startswith(head_res5) for k in own):
        return weights, file_name
    moved = {
        (head_res5 + k[len(trunk_res5) :] if k.startswith(trunk_res5) else k): v for k, v in weights.items()
    }

    def moved_name(key: str) -> str:
        return file_name(trunk_res5 + key[len(head_res5) :] if key.startswith(head_res5) else key)

    return moved, moved_name


def _weights_and_file_names(payload, path: str, config: ModelConfig) -> tuple[dict, Callable[[str], str]]:
    """`payload`'s weights under this project's keys (and conventions, for a model of `config`),
    and our key -> its name in the file."""
    if is_checkpoint(payload):
        return upgrade_state_dict(payload["model"]), lambda key: key
    detectron2 = detectron2_weights_of(payload, path)
    if detectron2 is not None:
        _warn_of_conventions(detectron2, config, path)
        return from_detectron2_layout(detectron2, config.anchors)
    if isinstance(payload, dict) and not is_torchvision_state_dict(payload):  # as load_model reads them
        wrapped = payload.get("model", payload.get("state_dict"))
        payload = wrapped if is_torchvision_state_dict(wrapped) else payload
    if is_torchvision_state_dict(payload):
        weights = {k: v for k, v in payload.items() if "num_batches_tracked" not in k}
        return rename_keys(weights, KEY_RULES), torchvision_key_names(weights)
    if isinstance(payload, dict) and "conv1.weight" in payload and "layer1.0.conv1.weight" in payload:
        names = torchvision_key_names({f"backbone.body.{k}": v for k, v in payload.items()})
        return torchvision_resnet_to_trunk(payload), lambda key: names(key).removeprefix("backbone.body.")
    raise CheckpointError(
        f"{path}: not an ImageNet ResNet, a torchvision Mask R-CNN, a detectron2 model or a maskrcnn "
        "checkpoint"
    )


def _warn_of_conventions(weights: dict, config: ModelConfig, path: str) -> None:
    """Warn when the model takes its input or strides its blocks otherwise than the detectron2
    model `weights` come from: the copied trunk would compute other features than it learnt."""
    if not is_detectron2_state_dict(weights):
        return  # a trunk alone (converted from torchvision): nothing says how it was trained
    differing = conventions_differing(config, weights)
    if differing:
        warnings.warn(
            f"{path}: these detectron2 weights were trained with {', '.join(differing)}, which this model "
            "does not have; set them for the model to compute what the weights learnt",
            UserWarning,
            stacklevel=4,
        )


def load_initial_weights(model: MaskRCNN, path: str) -> list[str]:
    """Copy what fits from `path` into `model`; returns the keys left at their initial values.

    Accepts a torchvision ImageNet classification checkpoint (trunk only), torchvision's
    Mask R-CNN state dict, a detectron2 model (.pkl or .pth; converted to this project's
    conventions, with a warning when the model's input or stride settings differ from those
    the weights were trained with) or trunk, or this project's checkpoint. Layers whose
    shapes differ (the class-specific predictors when fine-tuning to another number of
    classes) keep their fresh initialisation, with a warning that names them as the file
    does. An RGB stem is adapted to a model of 1 or more than 3 input channels
    (`adapt_stem`); a trunk's res5 goes to the C4 model's box head (`relocate_res5`).
    """
    weights, file_name = _weights_and_file_names(read_weights_file(path), path, model.config)
    own = model.state_dict()
    weights, file_name = relocate_res5(adapt_stem(weights, own, path), own, file_name)
    usable = {k: v for k, v in weights.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    skipped = [k for k in weights if k in own and k not in usable]  # in the file's order
    if not any(k.startswith(TRUNK) for k in usable):
        differ = [
            f"{file_name(k)}: file has {tuple(weights[k].shape)}, model expects {tuple(own[k].shape)}"
            for k in skipped
            if k.startswith(TRUNK)
        ]
        detail = f" (shapes differ, e.g. {'; '.join(differ[:3])})" if differ else ""
        raise CheckpointError(f"{path}: none of its trunk weights fit this model's backbone{detail}")
    if skipped:
        warnings.warn(
            f"{path}: shapes differ, kept freshly initialised: {', '.join(map(file_name, skipped))}",
            stacklevel=2,
        )
    # load_state_dict, not copies into `own`: a module may keep a weight in another layout than
    # its state dict's (FCBoxHead's fc6), where `own` holds a converted copy.
    model.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))
