"""Command-line options several commands share: the config and its overrides, weights,
device, score threshold and precision."""

import argparse

from maskrcnn import choices
from maskrcnn.choices import (
    DEFAULT_TILE_OVERLAP,
    MIN_TILE,
    PRECISIONS,
    PREDICT_SCORE_THRESHOLD,
)
from maskrcnn.cli.checks import Device, Number, OneOf, WholeNumber
from maskrcnn.errors import OptionError


def add_config(parser: argparse.ArgumentParser, help_text: str) -> None:
    """CONFIG (`help_text` says what it is for) and the key=value overrides after it."""
    parser.add_argument(
        "config",
        metavar="CONFIG",
        help=f"{help_text}: a YAML file, or the name of a built-in config such as shapes (`maskrcnn "
        "configs` lists them)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, before or after the options, e.g. solver.base_lr=0.01 "
        "data.min_sizes_train=[640,800] (values are read as YAML)",
    )


def add_weights(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights",
        required=True,
        metavar="FILE",
        help="a maskrcnn checkpoint (model_final.pt) or a torchvision Mask R-CNN state dict",
    )


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        type=Device(),
        default="auto",
        help="where the model runs: auto (CUDA if available, else the CPU), cpu, cuda, cuda:N or mps",
    )


def add_score_threshold(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--score-threshold",
        type=Number(0.0, 1.0),
        default=PREDICT_SCORE_THRESHOLD,
        metavar="P",
        help="keep detections scoring at least this, in [0, 1], as model.predict",
    )


def add_max_detections(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-detections",
        type=WholeNumber(1, 100_000),
        metavar="N",
        help="keep at most N detections per image (per tile with --tile): the model's "
        "roi_heads.detections_per_image, 100 for COCO; cells, bacteria and crowds need more "
        "(default: the model's)",
    )


def add_precision(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        type=OneOf(*PRECISIONS),
        default="fp32",
        help="bf16: bfloat16 autocast, several times faster on CPUs with bfloat16 "
        "instructions (AVX-512 BF16, AMX), 10-100x slower elsewhere; fp16: CUDA; auto: fp16 on CUDA, "
        "on the CPU bf16 where it is fast, else fp32",
    )
    add_strict(parser)


def add_strict(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse a precision that is slow on this hardware (fp16 on a CPU, bf16 on a CPU without "
        "bfloat16 instructions) instead of warning about it",
    )


def add_tiling(parser: argparse.ArgumentParser) -> None:
    """--tile and --tile-overlap (tiled prediction, modeling/tiling.py)."""
    parser.add_argument(
        "--tile",
        type=WholeNumber(MIN_TILE),
        default=None,
        metavar="PIXELS",
        help="cut images larger than PIXELS x PIXELS into overlapping tiles, detect in each (resized "
        "as any input of its size) and merge what the tiles share: for images far larger than the "
        "model's input size, whose small objects the resize would lose (default: whole images)",
    )
    parser.add_argument(
        "--tile-overlap",
        type=WholeNumber(0),
        default=None,
        metavar="PIXELS",
        help=f"pixels that neighbouring tiles share, at most half of --tile (an object this small "
        f"lies whole in some tile; default: {DEFAULT_TILE_OVERLAP}, or half of --tile if less)",
    )


def check_tile_overlap(tile: int | None, overlap: int | None) -> None:
    """--tile and --tile-overlap by tiled prediction's rule (`choices.tiling_problem`)."""
    problem = choices.tiling_problem(tile, overlap, "--tile", "--tile-overlap")
    if problem:
        raise OptionError(problem)
