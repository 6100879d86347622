"""`maskrcnn eval`: COCO AP of a model (or of a results file) on a COCO-format split.

The inputs are checked before the work's modules, and torch with them, are imported
(`engine.evaluate_run`), so that a wrong path or value is answered at once.
"""

import argparse
from pathlib import Path
from typing import NamedTuple

from maskrcnn.builtin_configs import resolve_config
from maskrcnn.cli import options
from maskrcnn.cli.checks import Number, OneOf, PositiveNumbers, WholeNumber
from maskrcnn.cli.paths import check_weights
from maskrcnn.config import TrainConfig, load_config_origins
from maskrcnn.errors import OptionError, shown
from maskrcnn.path_checks import config_origin, existing_file, existing_folder, output_folder

MAX_VIS = 10_000


def add(subcommands) -> argparse.ArgumentParser:
    parser = subcommands.add_parser(
        "eval",
        help="COCO box, mask and keypoint AP on a COCO-format split",
        description=(
            "COCO box and mask AP, and keypoint AP for keypoints, of a model (--weights) or of saved "
            "detections (--results) on a COCO-format split, scored against its annotations as "
            "training cleans them. Writes, in --out, results.json (the model's detections), "
            "metrics.json (with per-class AP), precision_recall.png, confusion_matrix.png and .json, "
            "vis/ (with --vis) and eval_files.json (what this run wrote: the next run into the same "
            "folder removes the earlier run's files it does not write again). Exit code 2 if "
            "nothing could be scored."
        ),
    )
    options.add_config(parser, "the config; its data.val_json and data.val_images are the default split")
    parser.add_argument(
        "--weights",
        metavar="FILE",
        help="the model to evaluate: a maskrcnn checkpoint or a torchvision state dict (no default: "
        "give it or --results)",
    )
    parser.add_argument(
        "--json",
        metavar="FILE",
        help="COCO annotations to score against (default: the config's data.val_json)",
    )
    parser.add_argument(
        "--images", metavar="DIR", help="folder of the split's images (default: the config's data.val_images)"
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="output folder, created if missing (default: the config's output_dir/eval)",
    )
    parser.add_argument(
        "--results",
        metavar="FILE",
        help="score this COCO results file instead of running a model (default: run --weights)",
    )
    parser.add_argument(
        "--vis",
        type=WholeNumber(0, MAX_VIS),
        default=0,
        metavar="N",
        help=f"write ground-truth/prediction pictures of the first N images to --out/vis (at most {MAX_VIS})",
    )
    parser.add_argument(
        "--oks-sigmas",
        type=PositiveNumbers(),
        metavar="S1,S2,...",
        help="the OKS sigma of each keypoint for keypoint AP, one per keypoint (default: the model's "
        "model.keypoint_head.oks_sigmas, with --results the config's, else COCO's person sigmas for 17 "
        "keypoints)",
    )
    parser.add_argument(
        "--metric",
        type=OneOf("coco", "accuracy"),
        default="coco",
        help="coco: COCO AP (always computed); accuracy: also the microscopy tools' TP/(TP+FP+FN) at "
        "IoU 0.5 to 0.9, per image and averaged (StarDist's accuracy, Cellpose's average_precision, "
        "the 2018 Data Science Bowl's score) (default: coco)",
    )
    parser.add_argument(
        "--match-score",
        type=Number(0, 1),
        default=0.5,
        metavar="S",
        help="the confusion matrix and the accuracy count detections scoring at least S (default: 0.5)",
    )
    parser.add_argument(
        "--match-iou",
        type=Number(0.01, 1),
        default=0.5,
        metavar="T",
        help="the confusion matrix pairs a detection with an object at mask IoU (box IoU without "
        "masks) >= T (default: 0.5)",
    )
    options.add_device(parser)
    options.add_precision(parser)
    return parser


def check(args: argparse.Namespace) -> None:
    """args.eval_config and args.paths; ConfigError or OptionError naming the option, or the
    config key and where its value came from."""
    config_path = resolve_config(args.config) if args.config is not None else None
    args.eval_config, args.paths = check_evaluation(
        config_path, args.overrides, args.weights, args.json, args.images, args.out, args.results, args.vis
    )
    explicit = args.paths.explicit
    if "device" in explicit:  # `device=...` in the file or the overrides, as --device
        device = args.eval_config.device
        if args.device not in ("auto", device):
            raise OptionError(f"--device {args.device} and device={device} ({explicit['device']}): give one")
        args.device = device


def run(args: argparse.Namespace) -> int:
    """Under torchrun (`torchrun --nproc_per_node N -m maskrcnn eval ...`) every process runs
    this: each predicts its share of the images; rank 0 alone prints and writes files."""
    from maskrcnn.evaluation.reports import ReportSettings
    from maskrcnn.evaluation.run import run_evaluation

    settings = ReportSettings(args.match_score, args.match_iou, accuracy=args.metric == "accuracy")
    return run_evaluation(
        args.eval_config,
        args.paths,
        args.weights,
        args.results,
        args.vis,
        args.device,
        args.precision,
        args.oks_sigmas,
        settings,
    )


def evaluate_command(
    config_path: str | None,
    weights: str | None,
    annotation_json: str | None = None,
    image_dir: str | None = None,
    out_dir: str | None = None,
    results_file: str | None = None,
    vis: int = 0,
    overrides: list[str] = (),
    device: str = "auto",
    precision: str = "fp32",
    oks_sigmas: tuple[float, ...] | None = None,
    metric: str = "coco",
    match_score: float = 0.5,
    match_iou: float = 0.5,
) -> int:
    """`maskrcnn eval` from Python, with the command's checks, messages and exit code (0
    evaluated, 2 bad input). config_path: a YAML file, a built-in config's name, or None."""
    from maskrcnn.cli.run import run_command

    args = argparse.Namespace(
        config=config_path, weights=weights, json=annotation_json, images=image_dir, out=out_dir,
        results=results_file, vis=vis, overrides=list(overrides), device=device, precision=precision,
        oks_sigmas=oks_sigmas, metric=metric, match_score=match_score, match_iou=match_iou,
        strict=False, check=check, run=run,
    )  # fmt: skip
    return run_command(args)


def check_evaluation(
    config_path: str | None,
    overrides,
    weights: str | None,
    annotation_json: str | None,
    image_dir: str | None,
    out_dir: str | None,
    results_file: str | None,
    vis: int,
) -> tuple[TrainConfig, "EvaluationPaths"]:
    """The config and the split's paths; raises ConfigError or OptionError naming the option,
    or the config key and where its value came from."""
    config, explicit = load_config_origins(config_path, list(overrides))
    paths = _checked_paths(config, config_path, overrides, weights, annotation_json, image_dir)
    paths = paths._replace(out=_checked_out(config, config_path, overrides, out_dir), explicit=explicit)
    _check_options(weights, results_file, vis)
    return config, paths


class EvaluationPaths(NamedTuple):
    annotations: str  # the annotation file to score against
    images: str  # its image folder ("": file names are relative to the working folder)
    out: Path | None = None  # the output folder
    # the config keys the file and the overrides set, with where each came from: the
    # model's test-time settings among them apply on top of the checkpoint's
    explicit: dict | None = None


def _checked_paths(config, config_path, overrides, weights, annotation_json, image_dir) -> EvaluationPaths:
    """The split's files, from --json and --images or else the config, checked to exist; a
    message names the option, or the config key and where its value came from."""
    if annotation_json is not None:
        existing_file("--json", annotation_json)
    elif config.data.val_json:
        annotation_json = config.data.val_json
        existing_file(
            "data.val_json", annotation_json, config_origin("data.val_json", config_path, overrides)
        )
    else:
        raise OptionError("no annotations to evaluate against: give --json or data.val_json in the config")
    images = image_dir if image_dir is not None else config.data.val_images
    if weights and image_dir is not None:  # the images are read only to run a model
        existing_folder("--images", image_dir)
    elif weights and images:
        existing_folder("data.val_images", images, config_origin("data.val_images", config_path, overrides))
    return EvaluationPaths(annotation_json, images or "")


def _checked_out(config, config_path, overrides, out_dir) -> Path:
    if out_dir is not None:
        return output_folder("--out", out_dir)
    origin = config_origin("output_dir", config_path, overrides)
    output_folder("output_dir", config.output_dir, origin)
    out = Path(config.output_dir) / "eval"  # as --help says
    if out.exists() and not out.is_dir():
        raise OptionError(f"{shown('output_dir', config.output_dir, origin)}: {out} (eval's --out) is a file")
    return out


def _check_options(weights, results_file, vis: int) -> None:
    if weights and results_file:
        raise OptionError(
            "--weights runs a model and --results scores saved detections instead: give one of them"
        )
    if not weights and not results_file:
        raise OptionError("give --weights FILE (or --results FILE to evaluate saved detections)")
    if weights:
        check_weights(weights)
    if results_file:
        existing_file("--results", results_file)
        if vis:
            raise OptionError(f"--vis {vis}: draws a model's predictions; it needs --weights, not --results")
