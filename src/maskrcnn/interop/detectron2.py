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

from maskrcnn.config import AnchorConfig, ModelConfig
from maskrcnn.interop.detectron2_config import (
    C4_MARK,
    FPN_MARK,
    detectron2_config,
    detectron2_config_anchors,
    model_kind,
)
from maskrcnn.interop.state_dicts import CheckpointError, check_fit, load_strict, rename_key
from maskrcnn.modeling.build import build_model
from maskrcnn.modeling.mask_rcnn import MaskRCNN

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
    kind = "fpn" if trunk_only else model_kind(weights)
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
