"""`maskrcnn train`: train from a config; the options are shorthands for config keys
(`config.FLAG_KEYS`). Everything is checked before torch is imported, so that a wrong value or
path is answered at once."""

import argparse
import dataclasses
import json

from maskrcnn.builtin_configs import resolve_config
from maskrcnn.choices import BEST_METRICS
from maskrcnn.cli import options
from maskrcnn.cli.checks import EvalPeriod, Number, OneOf, WholeNumber
from maskrcnn.cli.paths import check_training_paths
from maskrcnn.config import FLAG_KEYS, ConfigError, load_config
from maskrcnn.errors import user_errors

PATH_FLAGS = ("--train-json", "--train-images", "--val-json", "--val-images", "--out")
SOLVER_FLAGS = ("--budget-minutes", "--eval-period", "--patience", "--best-metric")


def add(subcommands) -> argparse.ArgumentParser:
    parser = subcommands.add_parser(
        "train",
        help="train on a COCO-format dataset",
        description=(
            "Train Mask R-CNN as a YAML config says, with key=value overrides of any config key; the "
            "options below are shorthands for the data.* keys, output_dir and solver.max_iter. Writes "
            "into the run folder (--out) last.pt, model_final.pt, metrics.jsonl, results.csv, "
            "loss_curves.png and, with a validation split, model_best.pt, metrics.json (per-class AP "
            "included), precision_recall.png and confusion_matrix.png. A folder that holds a run "
            "is refused unless --resume or --overwrite says what to do with it. Exit code 2 if the run "
            "could not start."
        ),
    )
    options.add_config(parser, "the config")
    parser.add_argument(
        "--train-json",
        metavar="FILE",
        help="COCO instance annotations of the training split (default: the config's data.train_json)",
    )
    parser.add_argument(
        "--train-images",
        metavar="DIR",
        help="folder of the training images (default: the config's data.train_images)",
    )
    parser.add_argument(
        "--val-json",
        metavar="FILE",
        help="annotations of the validation split, scored at the end of the run (default: the "
        "config's data.val_json, unless --train-json is given: then no validation split)",
    )
    parser.add_argument(
        "--val-images",
        metavar="DIR",
        help="folder of the validation images (default: the config's data.val_images)",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="run folder, created if missing (default: the config's output_dir)",
    )
    parser.add_argument(
        "--max-iter",
        type=WholeNumber(1),
        metavar="N",
        help="training iterations (default: the config's solver.max_iter)",
    )
    parser.add_argument(
        "--budget-minutes",
        type=Number(0.1, 100000),
        metavar="M",
        help="fit the run to M minutes of wall time, set-up and final evaluation included: the "
        "iterations follow the measured step time, the schedule keeps the config's proportions "
        "(solver.budget_minutes; replaces the config's solver.max_iter; default: no budget)",
    )
    _add_evaluation_options(parser)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last.pt, exactly as if it had not stopped",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out (its checkpoints, logs and plots) instead of refusing",
    )
    parser.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="skip missing or unreadable images with a warning instead of stopping",
    )
    options.add_strict(parser)
    return parser


def _add_evaluation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--eval-period",
        type=EvalPeriod(),
        metavar="N",
        help="with a validation split, evaluate (AP and validation loss) every N iterations; 0: "
        "only at the end; auto: under --budget-minutes as often as a tenth of the training time "
        "pays for, else only at the end (solver.eval_period; default: the config's, auto)",
    )
    parser.add_argument(
        "--patience",
        type=WholeNumber(0),
        metavar="N",
        help="stop after N evaluations without a better --best-metric; model_final.pt is the last "
        "state, model_best.pt the best one (solver.patience; default: the config's, 0: never)",
    )
    parser.add_argument(
        "--best-metric",
        type=OneOf(*BEST_METRICS),
        metavar="NAME",
        help="what chooses model_best.pt and what --patience watches: auto (mask AP; box AP "
        "without masks, keypoint AP for a keypoint-only model), a results.csv column such as "
        "bbox_AP or segm_AP50, or val_loss (solver.best_metric; default: the config's, auto)",
    )


def check(args: argparse.Namespace) -> None:
    """The config with the flags' overrides (args.config_path, args.train_config), its paths
    checked; ConfigError or OptionError naming the option or the key and its origin."""
    args.config_path = resolve_config(args.config)
    flags = {flag: getattr(args, flag[2:].replace("-", "_")) for flag in (*PATH_FLAGS, *SOLVER_FLAGS)}
    flags["--skip-bad-images"] = True if args.skip_bad_images else None
    overrides = {FLAG_KEYS[flag]: value for flag, value in flags.items()}
    val_given = args.val_json is not None or any(o.startswith("data.val_json=") for o in args.overrides)
    if args.train_json is not None and not val_given:
        # The config's validation split belongs to the config's own data, not to this one.
        overrides.update({"data.val_json": "", "data.val_images": ""})
    user_overrides = list(args.overrides)
    # JSON-quoted, so that a path such as `--out 2024` or `--out yes` stays a string (YAML reads JSON).
    every = user_overrides + [f"{k}={json.dumps(v)}" for k, v in overrides.items() if v is not None]
    _check_one_run_length(user_overrides, args.max_iter, args.budget_minutes)
    config = load_config(args.config_path, every)
    if args.max_iter is not None:  # the config's schedule, fitted to this length
        config = dataclasses.replace(config, solver=config.solver.scaled_to(args.max_iter))
    if not config.data.train_json or not config.data.train_images:
        raise ConfigError("no training data: give --train-json and --train-images")
    check_training_paths(config, args.config_path, user_overrides, {flag: flags[flag] for flag in PATH_FLAGS})
    args.train_config = config


def run(args: argparse.Namespace) -> int:
    config = args.train_config
    if args.train_json is not None and not config.data.val_json:
        print("no --val-json: training without a validation split (no AP is computed)")
    from maskrcnn.engine.trainer import NonFiniteLossError, train
    from maskrcnn.interop.state_dicts import CheckpointError

    with user_errors(CheckpointError, FileNotFoundError, ValueError, NonFiniteLossError):
        train(config, resume=args.resume, overwrite=args.overwrite)
    return 0


def _check_one_run_length(overrides: list[str], max_iter: int | None, budget_minutes: float | None) -> None:
    """A budget fits the number of iterations; an iteration count given beside it on the
    command line would be silently ignored, so the two are refused together."""
    iterations = max_iter is not None or any(o.startswith("solver.max_iter=") for o in overrides)
    budget = budget_minutes is not None or any(o.startswith("solver.budget_minutes=") for o in overrides)
    if iterations and budget:
        given = "--max-iter" if max_iter is not None else "solver.max_iter="
        raise ConfigError(
            f"--budget-minutes and {given} both set the length of the run: drop one "
            "(under a budget the iterations follow the measured step time)"
        )
