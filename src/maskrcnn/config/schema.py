"""Typed configuration: one dataclass per component of Mask R-CNN, and their plain-data form.

Defaults follow the paper's ResNet-50-FPN recipe. `config_from_dict` builds a config from plain
data (a checkpoint, a YAML file) and rejects unknown keys and values of the wrong type with a
message naming the key; numbers are read as a person writes them (`written_number`).
"""

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field

# Where a value came from, when it came from a key=value override (else a YAML file's path).
COMMAND_LINE = "the command line"


@dataclass
class BackboneConfig:
    depth: int = 50  # 50 or 101: the paper's trunks
    groups: int = 1  # 32 for ResNeXt
    width_per_group: int = 64  # 4 for ResNeXt-50 32x4d, 8 for ResNeXt-101 32x8d
    # Scaling the trunk down for small CPU runs: blocks per stage (overrides depth),
    # output channels of res2..res5 and of the stem.
    stage_blocks: tuple[int, ...] | None = None
    stage_channels: tuple[int, int, int, int] = (256, 512, 1024, 2048)
    stem_channels: int = 64
    norm: str = "frozen_bn"  # "frozen_bn", "bn" or "gn"
    norm_eps: float = 1e-5
    freeze_at: int = 2  # 0 trains everything; 1 freezes the stem; k freezes the stem and res2..res{k}
    stride_in_1x1: bool = False  # True for MSRA/detectron2 weights: stride on the first 1x1 conv
    fpn_channels: int = 256
    # "fpn", "c4" or "c5" (choices.BACKBONE_KINDS): where the RPN and the RoI heads read features.
    kind: str = "fpn"


@dataclass
class AnchorConfig:
    # one per FPN level P2-P6; "auto": fitted to the training boxes before training
    # (modeling/anchor_fit.py), the fitted sizes kept in the run's config
    sizes: tuple[int, ...] | str = (32, 64, 128, 256, 512)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # height / width
    round_to_integer: bool = True  # round cell anchors to whole pixels
    # Spacing of each level's anchor grid: "backbone", the stride of the feature map (from the
    # backbone's output_shape()); "image", padded image size // feature size (torchvision's
    # rule: P6's spacing then differs from 64 where P5 is odd).
    strides_from: str = "backbone"

    @staticmethod
    def upgrade(data: dict) -> dict:
        """Configs written before `strides_from` gave `strides`: a list (the backbone's
        strides, the only ones accepted) or null (derived from the image size)."""
        if "strides" in data and "strides_from" not in data:
            data = dict(data)
            data["strides_from"] = "image" if data.pop("strides") is None else "backbone"
        return data


@dataclass
class RPNConfig:
    pre_nms_topk_train: int = 2000  # per level
    pre_nms_topk_test: int = 1000
    post_nms_topk_train: int = 2000  # per image
    post_nms_topk_test: int = 1000
    nms_threshold: float = 0.7
    min_box_size: float = 1e-3  # proposals with a side under this are dropped; 0: only empty ones
    positive_iou: float = 0.7
    negative_iou: float = 0.3
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5
    box_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)


@dataclass
class RoIHeadsConfig:
    # "align" (RoIAlign), "align_max", "warp" (RoIWarp), "warp_max" or "pool" (RoIPool):
    # choices.POOLERS
    pooler: str = "align"
    sampling_ratio: int = 2
    aligned: bool = False
    box_resolution: int = 7
    mask_resolution: int = 14
    fc_dim: int = 1024
    mask_conv_dim: int = 256
    mask_num_convs: int = 4
    mask_head: str = "fcn"  # "fcn" (Figure 4) or "mlp" (fc mask_fc_dim, fc mask_fc_dim, classes x 2S x 2S)
    mask_fc_dim: int = 1024
    mask_loss: str = "sigmoid"  # "sigmoid" (per class), "softmax" (across classes) or "agnostic"
    batch_size_per_image: int = 512
    positive_fraction: float = 0.25
    foreground_iou: float = 0.5
    box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    detections_per_image: int = 100
    mask_threshold: float = 0.5
    # How a detection's mask is resized into its box (choices.MASK_PASTES): "torchvision" (the
    # mask padded by a zero cell, its box grown alike and snapped to whole pixels) or
    # "detectron2" (bilinear samples at the pixel centres inside the box, zero past the mask).
    mask_paste: str = "torchvision"
    # When clipped boxes of no size are dropped (choices.EMPTY_BOXES): "torchvision" before NMS
    # (under 0.01 px), "detectron2" after NMS and the detection cap.
    empty_boxes: str = "torchvision"


@dataclass
class KeypointHeadConfig:
    """The keypoint head (the paper's section 5; torchvision's and detectron2's design)."""

    num_keypoints: int = 17  # COCO person
    # The dataset's keypoint names (its category's "keypoints") and skeleton (1-based index pairs,
    # as COCO JSON gives them): flipping swaps "left_*" and "right_*", overlays draw the skeleton.
    names: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()
    # Per-keypoint OKS sigmas for keypoint AP; empty: COCO's person sigmas (17 keypoints).
    oks_sigmas: tuple[float, ...] = ()
    resolution: int = 14  # RoIAlign output per RoI
    conv_dim: int = 512
    num_convs: int = 8  # 3x3 convs, then a 4x4 stride-2 transposed conv and 2x bilinear: 56x56 heatmaps
    # What keypoint_scores are (choices.KEYPOINT_SCORES): the heatmap's logit at the keypoint
    # ("logit", torchvision's) or the softmax probability detectron2 publishes ("probability").
    score: str = "logit"


@dataclass
class InputConfig:
    min_size: int = 800
    max_size: int = 1333
    # One mean and std per input channel, on the [0, 1] scale `intensity` maps pixels to.
    pixel_mean: tuple[float, ...] = (0.485, 0.456, 0.406)  # ImageNet RGB
    pixel_std: tuple[float, ...] = (0.229, 0.224, 0.225)
    size_divisibility: int = 32
    channels: int = 3  # 1-channel images are repeated to fill a model of more channels
    # How pixel values become [0, 1] (data/intensity.py): "range" divides by the dtype's maximum
    # (8-bit photographs), "minmax" and "percentile" map each image's channel from its min/max
    # or its `percentiles` to [0, 1] (microscopy). "auto": "range" for uint8, floats already in
    # [0, 1] as they are, "percentile" for every other type (16-bit, int32, float TIFF).
    intensity: str = "auto"
    percentiles: tuple[float, float] = (1.0, 99.8)
    # The colour order the network takes (choices.CHANNEL_ORDERS): "rgb", or "bgr" (detectron2's
    # weights), for which the model reverses the RGB images it is given; pixel_mean and pixel_std
    # are then in B, G, R order.
    channel_order: str = "rgb"
    # A resized side is floor(side * scale) ("floor", torchvision's) or the nearest integer
    # ("round", detectron2's): data.transforms.resized_size.
    resize_rounding: str = "floor"


@dataclass
class ModelConfig:
    num_classes: int = 91  # including background at index 0
    class_names: tuple[str, ...] = ()
    # The dataset's category id of each label 1..num_classes-1; empty: the label is the id.
    category_ids: tuple[int, ...] = ()
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi_heads: RoIHeadsConfig = field(default_factory=RoIHeadsConfig)
    input: InputConfig = field(default_factory=InputConfig)
    masks: bool = True
    keypoints: bool = False
    keypoint_head: KeypointHeadConfig = field(default_factory=KeypointHeadConfig)


@dataclass
class DataConfig:
    train_json: str = ""
    train_images: str = ""
    val_json: str = ""
    val_images: str = ""
    min_sizes_train: tuple[int, ...] = (800,)  # short side drawn from these per image
    max_size_train: int = 1333
    flip_probability: float = 0.5
    # Augmentation (data/augment.py): "paper" (the short side drawn from min_sizes_train),
    # "lsj" (large-scale jitter: fit into a square of lsj_size times a factor drawn from
    # lsj_scale_range, then a random lsj_size square crop); "paper+copy_paste" and
    # "lsj+copy_paste": and instances of another training image pasted on top; "auto":
    # "paper+copy_paste" for a training set of at most 200 images (data.augment.SMALL_DATA_IMAGES),
    # "paper" for a larger one.
    augment: str = "paper"
    lsj_size: int = 0  # 0: model.input.max_size
    lsj_scale_range: tuple[float, float] = (0.1, 2.0)
    vertical_flip: float = 0.0  # probability; for data without a preferred orientation
    rotate90: bool = False  # a random quarter turn (0-3 of them)
    photometric: float = 0.0  # strength of brightness/contrast/gamma jitter (0: none)
    # > 0: repeat-factor sampling (LVIS): images of classes in fewer than this share of the
    # images are repeated sqrt(threshold / share) times per epoch (0.001 in the LVIS paper)
    repeat_factor_threshold: float = 0.0
    images_per_batch: int = 2  # per process
    num_workers: int = 2
    group_by_aspect_ratio: bool = True
    drop_images_without_annotations: bool = False
    skip_bad_images: bool = False
    # Images whose header claims more pixels (width x height x planes) are refused before
    # decoding (decompression bombs); 0: no limit.
    max_image_pixels: int = 300_000_000
    # Decode the training images once, into memory shared by the DataLoader workers, when they
    # fit in cache_images_max_mb (0: a quarter of the machine's memory, shared by the node's
    # processes); a larger set is read from disk at each use.
    cache_images: bool = True
    cache_images_max_mb: int = 0


@dataclass
class SolverConfig:
    base_lr: float = 0.02  # for 16 images per batch; scale linearly with the batch
    momentum: float = 0.9
    weight_decay: float = 1e-4
    max_iter: int = 90000
    steps: tuple[int, ...] = (60000, 80000)  # iterations where the learning rate drops
    gamma: float = 0.1
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    # "step" (the paper's: drops by gamma at `steps`), "linear" or "cosine" decay to zero;
    # warm-up and steps are read as fractions of max_iter, so they scale with the run.
    schedule: str = "step"
    # > 0: the whole run (set-up, steps, final evaluation) fits in this many minutes; the
    # number of iterations is fitted from the measured step time and max_iter only gives
    # the schedule's proportions.
    budget_minutes: float = 0.0
    clip_grad_norm: float = 0.0  # 0 disables clipping
    # "fp32", or "bf16"/"fp16" autocast; "auto": fp16 on CUDA, bf16 on a CPU with
    # bfloat16 instructions (AVX-512 BF16 or AMX), else fp32
    precision: str = "fp32"
    checkpoint_period: int = 5000
    log_period: int = 20
    # With a validation split: evaluate (AP and validation loss) every so many iterations and
    # at the end; 0: only at the end; "auto": a budget run evaluates as often as a tenth of
    # its training time pays for (measured), a run of fixed length only at the end.
    eval_period: int | str = "auto"
    # The evaluation's figure that chooses model_best.pt and that patience watches: "auto"
    # (mask AP; box AP for a box-only model, keypoint AP for a keypoint-only one), a column of
    # results.csv ("bbox_AP", "segm_AP50", "keypoints_AP", ...) or "val_loss" (lower is better).
    best_metric: str = "auto"
    patience: int = 0  # > 0: stop after this many evaluations without a better best_metric

    def scaled_to(self, total: int) -> "SolverConfig":
        """This schedule for a run of `total` iterations: warm-up and drops at the same fractions
        of the run (`--max-iter N` of train and ablate). Setting solver.max_iter alone keeps the
        drops where they are, which a shorter run may never reach."""
        scale = total / self.max_iter
        steps = tuple(max(1, round(step * scale)) for step in self.steps)
        return dataclasses.replace(
            self, max_iter=total, steps=steps, warmup_iters=round(self.warmup_iters * scale)
        )


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    seed: int = 0
    output_dir: str = "runs/train"
    # A local torchvision ImageNet ResNet/ResNeXt state dict for the trunk, or a full
    # Mask R-CNN file (ours or torchvision's) to fine-tune; empty trains from scratch.
    init_weights: str = ""
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range.

    key: the full dotted key the message is about (None when it is about a whole file).
    """

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key

    def located(self, origin: str) -> "ConfigError":
        """The same error, saying after its key where the value came from (a file, the command line)."""
        message = str(self)
        if not origin or "(from " in message:
            return self
        if self.key and message.startswith(self.key):
            rest = message[len(self.key) :]
            head, sep, tail = rest.partition(": ")
            return ConfigError(f"{self.key}{head} (from {origin}){sep}{tail}", self.key)
        return ConfigError(f"{origin}: {message}", self.key)


def config_to_dict(config) -> dict:
    """A dataclass config -> plain nested dicts and lists (YAML/JSON/pickle friendly)."""
    return _plain(dataclasses.asdict(config))


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def config_from_dict(cls, data: dict, path: str = ""):
    """Build dataclass `cls` from nested dicts, checking every key and type.

    path: dotted prefix used in error messages.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{path or cls.__name__}: expected a mapping, got {type(data).__name__}", path)
    if hasattr(cls, "upgrade"):
        data = cls.upgrade(data)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in data.items():
        dotted = f"{path}.{key}" if path else key
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean {(f'{path}.' if path else '') + close[0]!r}? " if close else ""
            raise ConfigError(
                f"{dotted}: unknown config key; {hint}known keys here: {', '.join(sorted(names))}", dotted
            )
        values[key] = _coerce(hints[key], value, dotted)
    return cls(**values)


def _coerce(hint, value, dotted: str):
    if dataclasses.is_dataclass(hint):
        return config_from_dict(hint, value, dotted)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            if typing.get_origin(option) is tuple and isinstance(value, (list, tuple)):
                return _coerce(option, value, dotted)  # a list is meant as the list type
            try:
                return _coerce(option, value, dotted)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{dotted}: expected {_name(hint)}, got {value!r}", dotted
        )
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{dotted}: expected {_name(hint)}, got {value!r}", dotted)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{dotted}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(
                f"{dotted}: expected {len(args)} values ({_name(hint)}), got {len(value)}", dotted
            )
        return tuple(_coerce(a, v, f"{dotted}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if hint is float:
        value = written_number(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        value = written_number(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is bool or hint is str:
        if isinstance(value, hint):
            return value
    else:
        raise ConfigError(f"{dotted}: unsupported config type {hint!r}", dotted)
    raise ConfigError(f"{dotted}: expected {_name(hint)}, got {value!r} ({type(value).__name__})", dotted)


# A number as a person writes it: 1e-3, 2E-4, 1_000, .5 (YAML 1.1 reads "1e-3" as a string)
_NUMBER = re.compile(r"[+-]?(\d[\d_]*(\.[\d_]*)?|\.\d[\d_]*)([eE][+-]?\d+)?")


def written_number(value):
    """`value`, or the number a string holds when it is written as one (an int when written
    without a point or an exponent); config values and command-line numbers read alike."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        number = float(value.strip().replace("_", ""))
        return int(number) if _INTEGER.fullmatch(value.strip()) else number
    return value


_INTEGER = re.compile(r"[+-]?\d[\d_]*")


def _name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
