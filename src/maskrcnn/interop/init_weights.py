"""Initial weights for training: an ImageNet trunk, or a whole model to fine-tune."""

import warnings

import torch

from maskrcnn.interop.load import read_weights_file
from maskrcnn.interop.state_dicts import CheckpointError, rename_keys
from maskrcnn.interop.torchvision import KEY_RULES, is_torchvision_state_dict
from maskrcnn.modeling.mask_rcnn import MaskRCNN


def torchvision_resnet_to_trunk(state_dict: dict) -> dict:
    """A torchvision classification ResNet/ResNeXt state dict -> our `trunk.*` keys (fc dropped)."""
    prefixed = {f"backbone.body.{k}": v for k, v in state_dict.items() if not k.startswith("fc.")}
    return {
        k: v for k, v in rename_keys(prefixed, KEY_RULES).items() if not k.endswith("num_batches_tracked")
    }


STEM_CONV = "trunk.stem.conv.weight"


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


def load_initial_weights(model: MaskRCNN, path: str) -> list[str]:
    """Copy what fits from `path` into `model`; returns the keys left at their initial values.

    Accepts a torchvision ImageNet classification checkpoint (trunk only), torchvision's
    Mask R-CNN state dict, or this project's checkpoint. Layers whose shapes differ (the
    class-specific predictors when fine-tuning to another number of classes) keep their
    fresh initialisation, with a warning that names them. An RGB stem is adapted to a model
    of 1 or more than 3 input channels (`adapt_stem`).
    """
    payload = read_weights_file(path)
    if isinstance(payload, dict) and payload.get("format") == "maskrcnn":
        weights = payload["model"]
    elif is_torchvision_state_dict(payload):
        weights = rename_keys({k: v for k, v in payload.items() if "num_batches_tracked" not in k}, KEY_RULES)
    elif isinstance(payload, dict) and "conv1.weight" in payload and "layer1.0.conv1.weight" in payload:
        weights = torchvision_resnet_to_trunk(payload)
    else:
        raise CheckpointError(
            f"{path}: not an ImageNet ResNet, a torchvision Mask R-CNN or a maskrcnn checkpoint"
        )

    own = model.state_dict()
    weights = adapt_stem(weights, own, path)
    usable = {k: v for k, v in weights.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not any(k.startswith("trunk.") for k in usable):
        raise CheckpointError(f"{path}: none of its trunk weights fit this model's backbone")
    skipped = sorted(k for k in weights if k in own and k not in usable)
    if skipped:
        warnings.warn(f"{path}: shapes differ, kept freshly initialised: {', '.join(skipped)}", stacklevel=2)
    with torch.no_grad():
        for key, value in usable.items():
            own[key].copy_(value)
    return sorted(set(own) - set(usable))
