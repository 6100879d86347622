"""Range and consistency checks of a configuration, before anything is built or read.

Types are checked while a config is read (config.py); this module checks values: every key
with a limit has one rule here, and settings that contradict each other are reported
together. Messages name the full dotted key, where its value came from (the command line
or a YAML file), the value and what is accepted.
"""

import math
import warnings
from collections.abc import Callable

from maskrcnn import choices
from maskrcnn.choices import (
    BACKBONE_KINDS,
    BEST_METRICS,
    CHANNEL_ORDERS,
    EMPTY_BOXES,
    INTENSITIES,
    KEYPOINT_SCORES,
    MASK_HEADS,
    MASK_LOSSES,
    MASK_PASTES,
    NORMS,
    POOLERS,
    PRECISIONS,
    RESIZE_ROUNDINGS,
)
from maskrcnn.config.schema import (
    COMMAND_LINE,
    ConfigError,
    DataConfig,
    InputConfig,
    ModelConfig,
    TrainConfig,
)

Origin = Callable[[str], str]  # dotted key -> "the command line", a YAML path, or "" (a default)


def _number(low=None, high=None, *, above=None, below=None, integer=False):
    """A rule for a number within limits; `low`/`high` are inclusive, `above`/`below` strict."""
    parts = ["an integer" if integer else "a number"]
    if low is not None:
        parts.append(f">= {low}")
    if above is not None:
        parts.append(f"> {above}")
    if high is not None:
        parts.append(f"<= {high}")
    if below is not None:
        parts.append(f"< {below}")

    def ok(value) -> bool:
        return (
            math.isfinite(value)
            and (low is None or value >= low)
            and (above is None or value > above)
            and (high is None or value <= high)
            and (below is None or value < below)
        )

    limits = " and ".join(parts[1:])
    return ok, f"{parts[0]} {limits}" if limits else parts[0]


def _choice(*options):
    return (lambda value: value in options), "one of " + ", ".join(map(str, options))


def _each(rule):
    ok, text = rule
    return (lambda values: len(values) > 0 and all(ok(v) for v in values)), f"a non-empty list, each {text}"


COUNT = _number(low=1, integer=True)
NON_NEGATIVE = _number(low=0)
POSITIVE = _number(above=0)
FRACTION = _number(low=0, high=1)
IOU = _number(above=0, high=1)
# Limits that no machine reaches, so that a typo (an extra zero or three) is an error at once
# instead of a run that allocates or forks until the machine gives up.
MAX_SIDE = 16384  # pixels: a (3, 16384, 16384) float input alone is 3 GiB
SIDE = _number(low=1, high=MAX_SIDE, integer=True)

MODEL_RULES = {
    "num_classes": _number(low=2, integer=True),
    "anchors.sizes": (
        lambda sizes: (
            sizes == "auto"
            or (not isinstance(sizes, str) and len(sizes) > 0 and all(1 <= s <= MAX_SIDE for s in sizes))
        ),
        '"auto" or a non-empty list of sizes in pixels, each >= 1',
    ),
    "backbone.depth": _choice(50, 101),
    "backbone.groups": COUNT,
    "backbone.width_per_group": COUNT,
    "backbone.stage_blocks": _each(COUNT),
    "backbone.stage_channels": _each(COUNT),
    "backbone.stem_channels": COUNT,
    "backbone.norm": _choice(*NORMS),
    "backbone.norm_eps": NON_NEGATIVE,  # torchvision COCO weights fold with eps 0
    "backbone.freeze_at": _number(low=0, high=5, integer=True),
    "backbone.fpn_channels": COUNT,
    "backbone.kind": _choice(*BACKBONE_KINDS),
    "anchors.aspect_ratios": _each(POSITIVE),
    "anchors.strides_from": _choice("backbone", "image"),
    "rpn.pre_nms_topk_train": COUNT,
    "rpn.pre_nms_topk_test": COUNT,
    "rpn.post_nms_topk_train": COUNT,
    "rpn.post_nms_topk_test": COUNT,
    "rpn.nms_threshold": IOU,
    "rpn.min_box_size": NON_NEGATIVE,
    "rpn.positive_iou": FRACTION,
    "rpn.negative_iou": FRACTION,
    "rpn.batch_size_per_image": COUNT,
    "rpn.positive_fraction": _number(above=0, high=1),
    "rpn.box_weights": _each(POSITIVE),
    "roi_heads.pooler": _choice(*POOLERS),
    "roi_heads.sampling_ratio": _number(low=0, integer=True),
    "roi_heads.box_resolution": COUNT,
    "roi_heads.mask_resolution": COUNT,
    "roi_heads.fc_dim": COUNT,
    "roi_heads.mask_conv_dim": COUNT,
    "roi_heads.mask_num_convs": _number(low=0, integer=True),
    "roi_heads.mask_head": _choice(*MASK_HEADS),
    "roi_heads.mask_fc_dim": COUNT,
    "roi_heads.mask_loss": _choice(*MASK_LOSSES),
    "roi_heads.batch_size_per_image": COUNT,
    "roi_heads.positive_fraction": _number(above=0, high=1),
    "roi_heads.foreground_iou": FRACTION,
    "roi_heads.box_weights": _each(POSITIVE),
    "roi_heads.score_threshold": FRACTION,
    "roi_heads.nms_threshold": IOU,
    "roi_heads.detections_per_image": COUNT,
    "roi_heads.mask_threshold": FRACTION,
    "roi_heads.mask_paste": _choice(*MASK_PASTES),
    "roi_heads.empty_boxes": _choice(*EMPTY_BOXES),
    "keypoint_head.score": _choice(*KEYPOINT_SCORES),
    "keypoint_head.num_keypoints": COUNT,
    "keypoint_head.skeleton": (lambda pairs: all(a >= 1 and b >= 1 for a, b in pairs), "1-based index pairs"),
    "keypoint_head.oks_sigmas": (lambda sigmas: all(s > 0 for s in sigmas), "a list of numbers, each > 0"),
    "keypoint_head.resolution": COUNT,
    "keypoint_head.conv_dim": COUNT,
    "keypoint_head.num_convs": _number(low=0, integer=True),
}

INPUT_RULES = {
    "min_size": SIDE,
    "max_size": SIDE,
    "pixel_std": _each(POSITIVE),
    "pixel_mean": _each(_number()),
    "size_divisibility": COUNT,
    "channels": COUNT,
    "intensity": _choice(*INTENSITIES),
    "percentiles": _each(_number(low=0, high=100)),
    "channel_order": _choice(*CHANNEL_ORDERS),
    "resize_rounding": _choice(*RESIZE_ROUNDINGS),
}

TRAIN_RULES = {
    "data.min_sizes_train": _each(SIDE),
    "data.max_size_train": SIDE,
    "data.flip_probability": FRACTION,
    "data.augment": _choice(*choices.AUGMENT_PRESETS),
    "data.lsj_size": _number(low=0, high=MAX_SIDE, integer=True),
    "data.lsj_scale_range": (
        lambda r: len(r) == 2 and 0 < r[0] <= r[1] <= 10,
        "two numbers low <= high in (0, 10]",
    ),
    "data.vertical_flip": FRACTION,
    "data.photometric": _number(low=0, below=1),
    "data.repeat_factor_threshold": FRACTION,
    "data.images_per_batch": _number(low=1, high=1024, integer=True),  # per process
    "data.num_workers": _number(low=0, high=256, integer=True),  # each one a process
    "data.max_image_pixels": _number(low=0, integer=True),
    "data.cache_images_max_mb": _number(low=0, integer=True),
    "solver.base_lr": POSITIVE,
    "solver.momentum": _number(low=0, below=1),
    "solver.weight_decay": NON_NEGATIVE,
    "solver.max_iter": COUNT,
    "solver.steps": (lambda steps: all(s >= 1 for s in steps), "a list of iterations, each >= 1"),
    "solver.gamma": POSITIVE,
    "solver.warmup_iters": _number(low=0, integer=True),
    "solver.warmup_factor": _number(above=0, high=1),
    "solver.schedule": _choice("step", "linear", "cosine"),
    "solver.budget_minutes": NON_NEGATIVE,
    "solver.clip_grad_norm": NON_NEGATIVE,
    "solver.precision": _choice(*PRECISIONS),
    "solver.checkpoint_period": COUNT,
    "solver.log_period": COUNT,
    "solver.eval_period": (
        lambda value: value == "auto" or (isinstance(value, int) and value >= 0),
        '"auto" or an integer >= 0',
    ),
    "solver.best_metric": _choice(*BEST_METRICS),
    "solver.patience": _number(low=0, integer=True),
}


def check_model_config(config: ModelConfig, origin: Origin = lambda key: "", prefix: str = "model") -> None:
    """Raise ConfigError for the first value of `config` out of its range, or a contradiction."""
    _apply(config, MODEL_RULES, origin, prefix)
    check_input_config(config.input, origin, f"{prefix}.input")
    if config.rpn.negative_iou > config.rpn.positive_iou:
        _contradiction(
            origin,
            f"{prefix}.rpn.negative_iou",
            config.rpn.negative_iou,
            f"{prefix}.rpn.positive_iou",
            config.rpn.positive_iou,
            "negative anchors must overlap less than positive ones",
        )
    _check_keypoint_head(config.keypoint_head, origin, f"{prefix}.keypoint_head")


def _check_keypoint_head(head, origin: Origin, prefix: str) -> None:
    """Names, when given, come one per keypoint, and so do sigmas once the count is known (from
    the names; without them training takes names and count from the data, and checks the
    sigmas then); the skeleton joins existing keypoints."""
    count = head.num_keypoints
    for key in ("names", "oks_sigmas"):
        values = getattr(head, key)
        if values and len(values) != count and (key == "names" or head.names):
            _contradiction(
                origin, f"{prefix}.{key}", values, f"{prefix}.num_keypoints", count, "give one per keypoint"
            )
    outside = [pair for pair in head.skeleton if max(pair) > count]
    if outside:
        _contradiction(
            origin,
            f"{prefix}.skeleton",
            head.skeleton,
            f"{prefix}.num_keypoints",
            count,
            f"{outside[0]} joins a keypoint past the last one (indices are 1-based)",
        )


def check_input_config(
    inputs: InputConfig, origin: Origin = lambda key: "", prefix: str = "model.input"
) -> None:
    """The input settings alone: sizes, per-channel statistics and intensity normalization."""
    _apply(inputs, INPUT_RULES, origin, prefix)
    for key in ("pixel_mean", "pixel_std"):
        if len(getattr(inputs, key)) != inputs.channels:
            _contradiction(
                origin,
                f"{prefix}.{key}",
                getattr(inputs, key),
                f"{prefix}.channels",
                inputs.channels,
                "give one value per input channel",
            )
    if inputs.channel_order == "bgr" and inputs.channels != 3:
        _contradiction(
            origin,
            f"{prefix}.channel_order",
            inputs.channel_order,
            f"{prefix}.channels",
            inputs.channels,
            "reversing the colour order needs 3 channels (RGB)",
        )
    low, high = inputs.percentiles
    if not low < high:
        _fail(origin, f"{prefix}.percentiles", inputs.percentiles, "(low, high) with low < high")
    if inputs.min_size > inputs.max_size:
        _contradiction(
            origin,
            f"{prefix}.min_size",
            inputs.min_size,
            f"{prefix}.max_size",
            inputs.max_size,
            "the short side can never reach min_size; lower it or raise max_size",
        )


# Settings a design does not read: (the setting that chooses the design, its values,
# {a setting it leaves without effect: why}).
WITHOUT_EFFECT = (
    (
        "backbone.kind",
        ("c4", "c5"),
        {
            "backbone.fpn_channels": "C4 and C5 models have no FPN",
            "roi_heads.fc_dim": "the C4 and C5 box head is res5 and average pooling, not fully connected",
            "roi_heads.mask_num_convs": "the C4 and C5 mask head has no convolution before its deconvolution",
        },
    ),
    (
        "roi_heads.mask_head",
        ("mlp",),
        {
            "roi_heads.mask_conv_dim": "the MLP mask head has fully connected layers only",
            "roi_heads.mask_num_convs": "the MLP mask head has fully connected layers only",
        },
    ),
    (
        "roi_heads.mask_head",
        ("fcn",),
        {"roi_heads.mask_fc_dim": "the FCN mask head has no fully connected layer"},
    ),
)


# The same for the data section: the square crop's keys are read by the lsj presets alone.
DATA_WITHOUT_EFFECT = (
    (
        "augment",
        ("paper", "paper+copy_paste", "auto"),
        {
            "lsj_size": "only the lsj presets crop to a square (auto never picks them)",
            "lsj_scale_range": "only the lsj presets draw a scale factor (auto never picks them)",
        },
    ),
    (
        "augment",
        ("lsj", "lsj+copy_paste"),
        {
            "min_sizes_train": "large-scale jitter draws a scale of the data.lsj_size square instead",
            "max_size_train": "large-scale jitter crops to the data.lsj_size square instead",
        },
    ),
)


class ConfigWarning(UserWarning):
    """A config value that is accepted but changes nothing (said once, in one line)."""


def _value(config, dotted: str):
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def check_settings_without_effect(
    model, origin: Origin, prefix: str = "model", rules=WITHOUT_EFFECT, defaults=None
) -> None:
    """Raise ConfigError for a setting (not at its default) that the chosen design does not
    read. A file's setting under a design chosen on the command line (a config for FPN
    trained as C4) is a warning instead: the file was written for another design.

    model: the config section the `rules` name keys of (ModelConfig by default; DataConfig
    with DATA_WITHOUT_EFFECT), `defaults` that section's defaults."""
    defaults = defaults if defaults is not None else ModelConfig()
    for chooser, designs, settings in rules:
        design = _value(model, chooser)
        if design not in designs:
            continue
        for setting, why in settings.items():
            value = _value(model, setting)
            if value == _value(defaults, setting):
                continue
            key, chosen_by = f"{prefix}.{setting}", f"{prefix}.{chooser}"
            message = (
                f"{key}={_shown(value)}{_where(origin, key)} has no effect with "
                f"{chosen_by}={_shown(design)}{_where(origin, chosen_by)}: {why}"
            )
            if origin(chosen_by) == COMMAND_LINE and origin(key) not in ("", COMMAND_LINE):
                warnings.warn(f"{message} (the file's value is not used)", ConfigWarning, stacklevel=2)
                continue
            raise ConfigError(f"{message}; leave it out", key=key)


def check_train_config(config: TrainConfig, origin: Origin = lambda key: "") -> None:
    """check_model_config and the training keys; raises ConfigError naming key and origin."""
    check_model_config(config.model, origin)
    check_settings_without_effect(config.model, origin)
    check_settings_without_effect(config.data, origin, "data", DATA_WITHOUT_EFFECT, DataConfig())
    _apply(config, TRAIN_RULES, origin, "")
    data = config.data
    if data.augment.startswith("paper") and max(data.min_sizes_train) > data.max_size_train:
        _contradiction(
            origin,
            "data.min_sizes_train",
            data.min_sizes_train,
            "data.max_size_train",
            data.max_size_train,
            "every training image would be limited by the maximum size, so the larger training "
            "sizes have no effect; raise data.max_size_train or lower the sizes",
        )
    if data.augment.endswith("+copy_paste") and not config.model.masks:
        _fail(
            origin,
            "data.augment",
            data.augment,
            "paper, lsj or auto: pasting needs the instances' masks, and model.masks is false",
        )
    steps = config.solver.steps
    if list(steps) != sorted(steps):
        _fail(origin, "solver.steps", steps, "iterations in increasing order")
    _check_best_and_patience(config, origin)
    device = config.device
    if not choices.is_device(device):
        _fail(origin, "device", device, choices.DEVICES_ACCEPTED)
    if not config.output_dir:
        _fail(origin, "output_dir", config.output_dir, "a folder path")


def _check_best_and_patience(config: TrainConfig, origin: Origin) -> None:
    """best_metric names a figure the model's evaluation gives; patience needs evaluations
    during the run, of a validation split."""
    solver, model = config.solver, config.model
    kind = solver.best_metric.partition("_")[0]
    if (kind == "segm" and not model.masks) or (kind == "keypoints" and not model.keypoints):
        head = "model.masks" if kind == "segm" else "model.keypoints"
        _contradiction(
            origin,
            "solver.best_metric",
            solver.best_metric,
            head,
            getattr(model, head.split(".")[1]),
            f"a model without {'masks' if kind == 'segm' else 'keypoints'} is not scored by it",
        )
    if solver.patience == 0:
        return
    if not config.data.val_json:
        _contradiction(
            origin,
            "solver.patience",
            solver.patience,
            "data.val_json",
            "",
            "patience counts evaluations of a validation split; give one (--val-json)",
        )
    periodic = solver.eval_period != 0 and (solver.eval_period != "auto" or solver.budget_minutes > 0)
    if not periodic:
        _contradiction(
            origin,
            "solver.patience",
            solver.patience,
            "solver.eval_period",
            solver.eval_period,
            "patience counts evaluations during the run, and this run evaluates only at its end; "
            "set solver.eval_period to a number of iterations",
        )


def _apply(config, rules: dict, origin: Origin, prefix: str) -> None:
    for key, (ok, accepted) in rules.items():
        value = config
        for part in key.split("."):
            value = getattr(value, part)
        if value is None:  # an optional setting left unset (e.g. backbone.stage_blocks)
            continue
        full = f"{prefix}.{key}" if prefix else key
        if not ok(value):
            _fail(origin, full, value, accepted)


def _shown(value) -> str:
    return str(list(value)) if isinstance(value, tuple) else repr(value)


def _where(origin: Origin, key: str) -> str:
    source = origin(key)
    return f" (from {source})" if source else ""


def _fail(origin: Origin, key: str, value, accepted: str) -> None:
    raise ConfigError(f"{key}={_shown(value)}{_where(origin, key)}: expected {accepted}", key=key)


def _contradiction(origin: Origin, key: str, value, other: str, other_value, why: str) -> None:
    raise ConfigError(
        f"{key}={_shown(value)}{_where(origin, key)} contradicts {other}={_shown(other_value)}"
        f"{_where(origin, other)}: {why}",
        key=key,
    )
