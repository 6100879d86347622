"""What `maskrcnn eval` is given, checked before anything is read or built.

Free of torch, so that the command line answers a wrong path or value at once
(`evaluate_command` runs these checks before importing `evaluate_run`).
"""

from pathlib import Path
from typing import NamedTuple

from maskrcnn.config import TrainConfig, load_config_origins
from maskrcnn.input_checks import (
    OptionError,
    check_weights,
    config_origin,
    existing_file,
    existing_folder,
    output_folder,
    shown,
)


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
