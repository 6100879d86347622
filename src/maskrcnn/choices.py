"""The values settings take, shared by the Python API, the config checks and the command line.

Kept free of torch so that the command line checks what the user typed before paying for
importing torch (seconds on a cold machine): a wrong value is answered at once.
"""

# The one default of every user-facing prediction: model.predict, `maskrcnn predict` and
# the graph `maskrcnn export` writes.
PREDICT_SCORE_THRESHOLD = 0.5
# The image files a folder is read for: `maskrcnn predict DIR` and the label converters
# (GIF is read when named, not looked for: it is mostly animations).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Tiled prediction (modeling/tiling.py): the smallest tile, and how much neighbours share by
# default (an object up to this size lies whole in some tile).
MIN_TILE = 64
DEFAULT_TILE_OVERLAP = 128


def tiling_problem(
    tile: int | None, overlap: int | None, tile_name: str = "tile", overlap_name: str = "tile_overlap"
) -> str | None:
    """The rule of tiled prediction's two settings, for the Python API, the command line and
    the server alike (each names them its own way); None when they are fine.

    tile None (or 0, the server's "no tiling") is no tiling, and then an overlap means nothing;
    else a tile is at least MIN_TILE pixels and neighbours share at most half a tile (more,
    and a tile's middle would be shared three ways).
    """
    if not tile:
        if overlap is not None:
            return (
                f"{overlap_name} {overlap}: only with {tile_name} (it is what neighbouring tiles share); "
                f"give {tile_name} too, or leave {overlap_name} out"
            )
        return None
    if tile < MIN_TILE:
        return f"{tile_name} {tile}: expected a whole number of pixels >= {MIN_TILE}"
    if overlap is not None and not 0 <= overlap <= tile // 2:
        half = f"half of {tile_name} {tile} ({tile // 2})"
        return f"{overlap_name} {overlap}: expected a whole number from 0 to {half}"
    return None


# model.backbone.norm: the trunk's normalization: BatchNorm frozen (statistics and affine from
# the pre-trained weights), BatchNorm trained, or GroupNorm (32 groups).
NORMS = ("frozen_bn", "bn", "gn")

# Where a model runs (`device`, --device): CUDA when present else the CPU, the CPU, CUDA (one
# GPU per process), GPU N, Apple's GPU.
DEVICES = ("auto", "cpu", "cuda", "mps")
DEVICES_ACCEPTED = "auto, cpu, cuda, cuda:N or mps"


def is_device(text: str) -> bool:
    """Whether `text` names a device as `device` and --device take it (DEVICES or cuda:N)."""
    kind, colon, index = text.partition(":")
    return (not colon and text in DEVICES) or (kind == "cuda" and index.isdigit())


# Numeric precision of a run (precision.py): float32, bfloat16 or float16 autocast, or the
# fastest of them on this hardware.
PRECISIONS = ("fp32", "bf16", "fp16", "auto")

# Intensity normalization (data/intensity.py); the per-image ones read each image's own values.
INTENSITIES = ("auto", "range", "minmax", "percentile")
PER_IMAGE = ("minmax", "percentile")

# The designs the paper compares (its Table 2), one config value each.
# model.backbone.kind: the feature maps the RPN and the RoI heads read. "fpn": a pyramid P2-P6
# on res2-res5; "c4": res4 (stride 16) for both, res5 runs on the pooled RoIs as the box
# head; "c5": res5 (stride 32) for both, the C4 head without its res5 (Table 2d).
BACKBONE_KINDS = ("fpn", "c4", "c5")
# model.roi_heads.pooler (Table 2c): RoIAlign averaging (the paper's) or taking the maximum of
# its bilinear samples; RoIWarp (the RoI rounded to feature cells, then bilinear samples)
# averaging or max; RoIPool (rounded RoI and bins, max).
POOLERS = ("align", "align_max", "warp", "warp_max", "pool")
# model.roi_heads.mask_loss (Table 2b): a per-pixel sigmoid on the RoI's class's mask (the
# paper's), a per-pixel softmax across the classes, or one class-agnostic mask.
MASK_LOSSES = ("sigmoid", "softmax", "agnostic")
# model.roi_heads.mask_head (Table 2e): the FCN of Figure 4, or fully connected layers.
MASK_HEADS = ("fcn", "mlp")

# Conventions of weights trained elsewhere (detectron2's, interop/detectron2.py), one setting each.
# model.input.channel_order: the order of the colour channels the network takes ("bgr":
# the model reverses the RGB images it is given).
CHANNEL_ORDERS = ("rgb", "bgr")
# model.input.resize_rounding: a resized side is floor(side * scale) (torchvision's) or
# rounded to the nearest integer (detectron2's).
RESIZE_ROUNDINGS = ("floor", "round")
# model.roi_heads.mask_paste: torchvision's paste (the mask padded by a cell and its box grown
# to match, whole pixels) or detectron2's (bilinear samples at the pixel centres in the box).
MASK_PASTES = ("torchvision", "detectron2")
# model.roi_heads.empty_boxes: when the box head drops boxes that clipping made (nearly) empty:
# before NMS and the cut to detections_per_image, those under 0.01 px ("torchvision"), or after
# them, those of no width or height ("detectron2": the cut then keeps fewer detections).
EMPTY_BOXES = ("torchvision", "detectron2")
# model.keypoint_head.score: a keypoint's score is its heatmap's logit at the peak ("logit",
# torchvision's keypoint_scores), or the peak's share of the heatmap's softmax ("probability":
# 1 / sum over the cells of exp(logit - peak), detectron2's pred_keypoints[..., 2]).
KEYPOINT_SCORES = ("logit", "probability")

# data.augment presets (data/augment.py): the paper's multi-scale resize or large-scale
# jitter, each alone or with Simple Copy-Paste.
AUGMENT_PRESETS = ("paper", "paper+copy_paste", "lsj", "lsj+copy_paste", "auto")

# COCOeval's summary figures (keypoints have no small objects: COCO labels no keypoints on them).
AP_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
KEYPOINT_AP_NAMES = ("AP", "AP50", "AP75", "APm", "APl")
# What a run keeps its best model by and patience watches (`solver.best_metric`): an AP as
# results.csv names it, or the validation loss (the one figure where lower is better).
VALIDATION_LOSS = "val_loss"
BEST_METRICS = (
    "auto",
    *(f"bbox_{name}" for name in AP_NAMES),
    *(f"segm_{name}" for name in AP_NAMES),
    *(f"keypoints_{name}" for name in KEYPOINT_AP_NAMES),
    VALIDATION_LOSS,
)


def best_metric(setting: str, masks: bool, keypoints: bool) -> str:
    """`solver.best_metric` for a model: "auto" is mask AP, box AP for a box-only model and
    keypoint AP for a keypoint-only one (masks off, keypoints on)."""
    if setting != "auto":
        return setting
    if masks:
        return "segm_AP"
    return "keypoints_AP" if keypoints else "bbox_AP"
