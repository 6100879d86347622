"""The `maskrcnn` command line: a thin argparse front end that dispatches to engine functions.

Commands: predict, train, eval, export, make-shapes, configs, ablate, serve. Each is one
`_add_<name>` function that declares its arguments and sets `run` to a callable taking the parsed
namespace and returning the exit code; the work lives in the engine module named after the command
(`maskrcnn.engine.predict`, `train_command`, `evaluate_command`, `export_command`,
`make_shapes_command`, `configs_command`, `ablate_command`, `maskrcnn.serve.command`;
`configs` and `ablate` are declared in `cli_experiments`, `serve` in `cli_serve`). To add a
command, write its `_add_<name>` and list it in SUBCOMMANDS.

What the user gives is checked before any work (`cli_checks`, `input_checks`): option values as argparse reads
them, paths when a command starts, so that a wrong one is one line `error: <option> <value>:
<problem>` and exit code 2, never a traceback, and never after minutes of set-up. A misspelt
option or a missing one prints the subcommand's usage and the error line ("did you mean ...?";
`cli_parser`).
"""

import argparse
import contextlib
import os
import signal
import sys
import warnings

from tqdm import tqdm

from maskrcnn import __version__
from maskrcnn import cli_options as options
from maskrcnn.builtin_configs import resolve_config
from maskrcnn.cli_checks import Number, OneOf, PositiveNumbers, WholeNumber
from maskrcnn.cli_experiments import add_ablate, add_configs
from maskrcnn.cli_parser import CommandParser, UsageError, unrecognized
from maskrcnn.cli_serve import add_serve
from maskrcnn.config import DataConfig
from maskrcnn.engine.stop import Interrupted, signals_raise_interrupted
from maskrcnn.fast_path_switch import check_environment
from maskrcnn.input_checks import (
    OptionError,
    check_weights,
    existing_file,
    existing_path,
    one_line,
    output_file,
    output_folder,
)
from maskrcnn.precision import strict_precision

EXIT_USAGE = 2
# make-shapes writes about 100 kB and takes about 20 ms per image: 100000 is 10 GB and half an hour.
MAX_SHAPES_IMAGES = 100_000
MAX_VIS = 10_000


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]) and run the chosen subcommand; returns the exit code."""
    parser = build_parser()
    try:
        args = parse_args(argv, parser)
    except SystemExit as exit_:  # --help or --version: argparse has printed it
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    except UsageError as error:
        _report(error.parser.format_usage() + f"error: {error}")
        return EXIT_USAGE
    except OptionError as error:
        _report(f"error: {error}")
        return EXIT_USAGE
    try:
        check_environment()
    except ValueError as error:
        _report(f"error: {error}")
        return EXIT_USAGE
    with plain_warnings(), strict_precision(getattr(args, "strict", False)), signals_raise_interrupted():
        try:
            leave_size_limits_to_maskrcnn()  # every read of this program checks its own limit
            return args.run(args)
        except OptionError as error:
            _report(f"error: {error}")
            return EXIT_USAGE
        except (KeyboardInterrupt, Interrupted) as stop:
            # Output files are written whole or not at all (files.atomic_output): one line is all.
            stop = stop if isinstance(stop, Interrupted) else Interrupted(signal.SIGINT)
            _report(str(stop))
            return stop.exit_code
        except Exception as error:  # a bug: one line, unless asked for the traceback
            if os.environ.get("MASKRCNN_TRACEBACK"):
                raise
            _report(
                f"error: {type(error).__name__}: {one_line(error)} (unexpected: please report it; "
                "MASKRCNN_TRACEBACK=1 shows where it happened)"
            )
            return 1


def leave_size_limits_to_maskrcnn() -> None:
    """PIL's process-wide decompression-bomb guard switched off, once, at the start of this
    program, before any thread runs: every image it reads is checked against its own limit
    (`data.max_image_pixels`, `--max-image-pixels`) from the header before anything is decoded
    (`data.images`), and PIL's fixed limit (about 89 megapixels, an error at twice that) would
    refuse genuine aerial and microscopy images under it. Library calls never change it: it is
    the calling program's setting."""
    from PIL import Image  # PIL, not torch: the command line still answers at once

    Image.MAX_IMAGE_PIXELS = None


def parse_args(argv: list[str] | None, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """The command line as `main` reads it (argparse's, with key=value overrides also after the
    options); raises UsageError or OptionError."""
    parser = parser or build_parser()
    args, extras = parser.parse_known_args(argv)
    if not extras:
        return args
    # key=value overrides may also follow the options (argparse stops collecting them there).
    if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extras):
        args.overrides = [*args.overrides, *extras]
        return args
    raise unrecognized(parser.subcommand_parsers[args.command], extras)


def _report(message: str) -> None:
    """Print on stderr, once: under torchrun only the first process says it."""
    if os.environ.get("RANK", "0") == "0":
        print(message, file=sys.stderr)


@contextlib.contextmanager
def plain_warnings():
    """Warnings as `warning: <message>` lines of their own on stderr, for a person reading a
    terminal or a log: no source line of the call, and never glued to a progress bar."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        tqdm.write(f"warning: {message}", file=file or sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="maskrcnn", description="Mask R-CNN in plain PyTorch.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.subcommand_parsers = {}
    for add in SUBCOMMANDS:
        command = add(subcommands)
        parser.subcommand_parsers[command.prog.split()[-1]] = command
    return parser


def _add_predict(subcommands) -> argparse.ArgumentParser:
    parser = subcommands.add_parser(
        "predict",
        help="detect objects in images; write overlays and COCO results JSON",
        description=(
            "Detect objects in images and write, in --out, <stem>.png overlays, predictions.json "
            "(COCO results with RLE masks, or polygons with --polygons, and a keypoint model's "
            "keypoints), images.json and "
            "predict_files.json (what this run wrote: the next run into the same folder removes "
            "the earlier run's files it does not write again). Exit code 1 if some images could "
            "not be read, 2 if nothing could run."
        ),
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="IMAGE_OR_DIR",
        help="image files, or folders whose image files are read (not recursively; hidden and "
        "other files are skipped)",
    )
    options.add_weights(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    options.add_score_threshold(parser)
    options.add_device(parser)
    options.add_precision(parser)
    parser.add_argument(
        "--polygons",
        action="store_true",
        help="polygon segmentations instead of RLE (pycocotools' loadRes/COCOeval read only RLE)",
    )
    parser.add_argument(
        "--max-image-pixels",
        type=WholeNumber(0),
        default=DataConfig.max_image_pixels,
        metavar="N",
        help="refuse, before decoding, images whose header claims more pixels (width x height x "
        "planes; 0: no limit)",
    )
    options.add_tiling(parser)
    parser.set_defaults(run=_run_predict)
    return parser


def _run_predict(args: argparse.Namespace) -> int:
    check_weights(args.weights)
    for path in args.inputs:
        existing_path("IMAGE_OR_DIR", path)
    output_folder("--out", args.out)
    options.check_tile_overlap(args.tile, args.tile_overlap)
    # Each command imports its engine module when run, so none pays for the others' imports.
    from maskrcnn.engine.predict import predict_command

    return predict_command(
        args.inputs,
        weights=args.weights,
        out_dir=args.out,
        score_threshold=args.score_threshold,
        device=args.device,
        polygons=args.polygons,
        precision=args.precision,
        max_image_pixels=args.max_image_pixels,
        tile=args.tile,
        tile_overlap=args.tile_overlap,
    )


def _add_train(subcommands) -> argparse.ArgumentParser:
    parser = subcommands.add_parser(
        "train",
        help="train on a COCO-format dataset",
        description=(
            "Train Mask R-CNN as a YAML config says, with key=value overrides of any config key; the "
            "options below are shorthands for the data.* keys, output_dir and solver.max_iter. Writes "
            "into the run folder (--out) last.pt, model_final.pt, metrics.jsonl, loss_curves.png and, "
            "with a validation split, metrics.json and precision_recall.png. A folder that holds a run "
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
    parser.set_defaults(run=_run_train)
    return parser


def _run_train(args: argparse.Namespace) -> int:
    config = resolve_config(args.config)
    from maskrcnn.engine.train_command import train_command

    return train_command(
        config,
        args.overrides,
        train_json=args.train_json,
        train_images=args.train_images,
        val_json=args.val_json,
        val_images=args.val_images,
        out=args.out,
        max_iter=args.max_iter,
        budget_minutes=args.budget_minutes,
        resume=args.resume,
        overwrite=args.overwrite,
        skip_bad_images=args.skip_bad_images,
    )


def _add_eval(subcommands) -> argparse.ArgumentParser:
    parser = subcommands.add_parser(
        "eval",
        help="COCO box, mask and keypoint AP on a COCO-format split",
        description=(
            "COCO box and mask AP, and keypoint AP for keypoints, of a model (--weights) or of saved "
            "detections (--results) on a "
            "COCO-format split, scored against its annotations as training cleans them. Writes, in "
            "--out, results.json (the model's detections), metrics.json, precision_recall.png, "
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
    options.add_device(parser)
    options.add_precision(parser)
    parser.set_defaults(run=_run_eval)
    return parser


def _run_eval(args: argparse.Namespace) -> int:
    config = resolve_config(args.config)
    from maskrcnn.engine.evaluate_command import evaluate_command

    return evaluate_command(
        config,
        args.weights,
        annotation_json=args.json,
        image_dir=args.images,
        out_dir=args.out,
        results_file=args.results,
        vis=args.vis,
        overrides=args.overrides,
        device=args.device,
        precision=args.precision,
        oks_sigmas=args.oks_sigmas,
    )


def _add_export(subcommands) -> argparse.ArgumentParser:
    parser = subcommands.add_parser(
        "export",
        help="export a model to ONNX (dynamic image size, pasted masks in the graph)",
        description=(
            "Export to ONNX: input 'image' (C, H, W) float32 of any size, C = model.input.channels, "
            "in [0, 1] (intensity range) or raw intensities (minmax, percentile); outputs "
            "boxes (D, 4) xyxy pixels, scores (D,), labels (D,) int64, masks (D, H, W) bool. The "
            "file is then run with ONNX Runtime and compared with the eager model. Exit code 1 if "
            "that check fails, 2 if nothing was written."
        ),
    )
    parser.add_argument("out", metavar="OUT.onnx", help="the file to write (replaced if it exists)")
    options.add_weights(parser)
    parser.add_argument(
        "--check-image",
        metavar="IMAGE",
        help="compare the file with the eager model on this image (default: a random image at the "
        "model's input size)",
    )
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime comparison")
    options.add_score_threshold(parser)
    parser.add_argument(
        "--intensity",
        type=OneOf("range", "minmax", "percentile"),
        help="the graph's intensity normalization, for a model whose model.input.intensity is "
        "'auto' (default: the model's own setting; range for 'auto', input in [0, 1]); minmax and "
        "percentile take raw intensities and normalize each channel inside the graph",
    )
    parser.set_defaults(run=_run_export)
    return parser


def _run_export(args: argparse.Namespace) -> int:
    check_weights(args.weights)
    output_file("OUT.onnx", args.out)
    if args.check_image is not None:
        if args.no_check:
            raise OptionError(
                "--check-image names an image to compare on and --no-check skips the comparison: give one"
            )
        existing_file("--check-image", args.check_image)
    from maskrcnn.engine.export_command import export_command

    return export_command(
        args.weights,
        args.out,
        check_image=args.check_image,
        check=not args.no_check,
        intensity=args.intensity,
        score_threshold=args.score_threshold,
    )


def _add_make_shapes(subcommands) -> argparse.ArgumentParser:
    parser = subcommands.add_parser(
        "make-shapes",
        help="write the synthetic shapes dataset (COCO format)",
        description=(
            "Write the built-in synthetic dataset (circles, squares and triangles on noisy "
            "backgrounds, 256x192 PNG images) in COCO format: OUT/annotations/instances_train.json, "
            "OUT/annotations/instances_val.json and the image folders OUT/train and OUT/val. The same "
            "seed gives the same files. With --keypoints the same images come with each shape's "
            "four extreme points (top, right, bottom, left) as COCO keypoints. Prints the files it wrote."
        ),
    )
    parser.add_argument("out", metavar="OUT", help="the dataset folder (created if missing)")
    parser.add_argument(
        "--train",
        type=WholeNumber(1, MAX_SHAPES_IMAGES),
        default=1000,
        metavar="N",
        help="training images",
    )
    parser.add_argument(
        "--val",
        type=WholeNumber(1, MAX_SHAPES_IMAGES),
        default=100,
        metavar="N",
        help="validation images",
    )
    parser.add_argument(
        "--seed", type=WholeNumber(0), default=0, metavar="N", help="random seed of the drawings"
    )
    parser.add_argument(
        "--keypoints",
        action="store_true",
        help="annotate each shape's topmost, rightmost, bottommost and leftmost points as COCO "
        "keypoints (top, right, bottom, left; v=2 visible, 1 under a shape drawn later), with a skeleton",
    )
    parser.set_defaults(run=_run_make_shapes)
    return parser


def _run_make_shapes(args: argparse.Namespace) -> int:
    output_folder("OUT", args.out)
    from maskrcnn.engine.make_shapes_command import make_shapes_command

    return make_shapes_command(args.out, args.train, args.val, args.seed, keypoints=args.keypoints)


SUBCOMMANDS = [
    _add_predict,
    _add_train,
    _add_eval,
    _add_export,
    _add_make_shapes,
    add_configs,
    add_ablate,
    add_serve,
]


if __name__ == "__main__":
    sys.exit(main())
