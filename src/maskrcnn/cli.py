"""The `maskrcnn` command line: a thin argparse front end that dispatches to engine functions.

Commands: predict, train, eval, make-shapes. Each is one `_add_<name>` function that
declares its arguments and sets `run` to a callable taking the parsed namespace and
returning the exit code; the work lives in the engine module named after the command
(`maskrcnn.engine.predict`, `train_command`, `evaluate_command`). To add a command, write
its `_add_<name>` and list it in SUBCOMMANDS.
"""

import argparse
import contextlib
import sys
import warnings

from tqdm import tqdm

from maskrcnn import __version__
from maskrcnn.config import DataConfig
from maskrcnn.modeling.mask_rcnn import PREDICT_SCORE_THRESHOLD
from maskrcnn.precision import PRECISIONS, strict_precision


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]) and run the chosen subcommand; returns the exit code."""
    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        # key=value overrides may also follow the options (argparse stops collecting them there).
        if extras and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extras):
            args.overrides = [*args.overrides, *extras]
        elif extras:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
    except SystemExit as exit_:  # --help, --version or a usage error: argparse has printed it
        return exit_.code if isinstance(exit_.code, int) else 2
    with plain_warnings(), strict_precision(getattr(args, "strict", False)):
        return args.run(args)


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
    parser = argparse.ArgumentParser(prog="maskrcnn", description="Mask R-CNN in plain PyTorch.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subcommands)
    return parser


def _add_predict(subcommands) -> None:
    parser = subcommands.add_parser(
        "predict",
        help="detect objects in images; write overlays and COCO results JSON",
        description=(
            "Detect objects in images and write, in --out, <stem>.png overlays, predictions.json "
            "(COCO results with RLE masks, or polygons with --polygons) and images.json. Exit code "
            "1 if some images could not be read, 2 if nothing could run."
        ),
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="IMAGE_OR_DIR",
        help="image files, or directories to scan (not recursively)",
    )
    parser.add_argument(
        "--weights", required=True, metavar="FILE", help="maskrcnn checkpoint or torchvision state dict"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    _add_score_threshold(parser)
    parser.add_argument(
        "--device", choices=("cpu", "cuda", "auto"), default="auto", help="auto: CUDA if available"
    )
    _add_precision(parser)
    parser.add_argument(
        "--polygons",
        action="store_true",
        help="polygon segmentations instead of RLE (pycocotools' loadRes/COCOeval read only RLE)",
    )
    parser.add_argument(
        "--max-image-pixels",
        type=_non_negative_int,
        default=DataConfig.max_image_pixels,
        metavar="N",
        help="refuse, before decoding, images whose header claims more pixels "
        f"(width x height x planes; default {DataConfig.max_image_pixels}, 0: no limit)",
    )
    parser.set_defaults(run=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
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
    )


def _add_train(subcommands) -> None:
    parser = subcommands.add_parser("train", help="train on a COCO-format dataset")
    parser.add_argument("config", help="a YAML config, e.g. configs/shapes.yaml")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. solver.base_lr=0.01"
    )
    parser.add_argument("--train-json")
    parser.add_argument("--train-images")
    parser.add_argument("--val-json")
    parser.add_argument("--val-images")
    parser.add_argument("--out", help="run folder (output_dir)")
    parser.add_argument("--max-iter", type=int)
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's last.pt")
    _add_strict(parser)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out (its checkpoints, logs and plots) instead of refusing",
    )
    parser.add_argument(
        "--skip-bad-images", action="store_true", help="skip unreadable images with a warning"
    )
    parser.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from maskrcnn.engine.train_command import train_command

    return train_command(
        args.config,
        args.overrides,
        train_json=args.train_json,
        train_images=args.train_images,
        val_json=args.val_json,
        val_images=args.val_images,
        out=args.out,
        max_iter=args.max_iter,
        resume=args.resume,
        overwrite=args.overwrite,
        skip_bad_images=args.skip_bad_images,
    )


def _add_eval(subcommands) -> None:
    parser = subcommands.add_parser("eval", help="COCO box and mask AP on a COCO-format split")
    parser.add_argument("config", help="a YAML config (its validation split is the default)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    parser.add_argument("--weights", help="the model to evaluate")
    parser.add_argument("--json", help="annotations (default: data.val_json)")
    parser.add_argument("--images", help="image folder (default: data.val_images)")
    parser.add_argument("--out", help="folder for results.json, metrics.json and plots")
    parser.add_argument("--results", help="evaluate this COCO results file instead of running a model")
    parser.add_argument(
        "--vis", type=int, default=0, metavar="N", help="write N ground-truth/prediction pairs"
    )
    parser.add_argument("--device", default="auto")
    _add_precision(parser)
    parser.set_defaults(run=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from maskrcnn.engine.evaluate_command import evaluate_command

    return evaluate_command(
        args.config,
        args.weights,
        annotation_json=args.json,
        image_dir=args.images,
        out_dir=args.out,
        results_file=args.results,
        vis=args.vis,
        overrides=args.overrides,
        device=args.device,
        precision=args.precision,
    )


def _add_make_shapes(subcommands) -> None:
    parser = subcommands.add_parser("make-shapes", help="write the synthetic shapes dataset (COCO format)")
    parser.add_argument("out")
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=_run_make_shapes)


def _run_make_shapes(args: argparse.Namespace) -> int:
    from maskrcnn.engine.train_command import make_shapes_command

    return make_shapes_command(args.out, args.train, args.val, args.seed)


def _add_export(subcommands) -> None:
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
    parser.add_argument("out", metavar="OUT.onnx")
    parser.add_argument(
        "--weights", required=True, metavar="FILE", help="maskrcnn checkpoint or torchvision state dict"
    )
    parser.add_argument("--format", choices=("onnx",), default="onnx")
    parser.add_argument("--check-image", metavar="IMAGE", help="compare on this image (default: random)")
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime comparison")
    _add_score_threshold(parser)
    parser.add_argument(
        "--intensity",
        choices=("range", "minmax", "percentile"),
        help="the graph's intensity normalization, for a model whose model.input.intensity is "
        "'auto' (default there: range, input in [0, 1]); minmax and percentile take raw intensities "
        "and normalize each channel inside the graph",
    )
    parser.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from maskrcnn.engine.export_command import export_command

    return export_command(
        args.weights,
        args.out,
        format=args.format,
        check_image=args.check_image,
        check=not args.no_check,
        intensity=args.intensity,
        score_threshold=args.score_threshold,
    )


def _add_score_threshold(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--score-threshold",
        type=_probability,
        default=PREDICT_SCORE_THRESHOLD,
        help="keep detections scoring at least this, in [0, 1] (default %(default)s, as model.predict)",
    )


def _add_precision(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="bf16: bfloat16 autocast, several times faster on CPUs with bfloat16 "
        "instructions (AVX-512 BF16, AMX), 10-100x slower elsewhere; fp16: CUDA; auto: fp16 on CUDA, "
        "on the CPU bf16 where it is fast, else fp32 (default fp32)",
    )
    _add_strict(parser)


def _add_strict(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse a precision that is slow on this hardware (fp16 on a CPU, bf16 on a CPU without "
        "bfloat16 instructions) instead of warning about it",
    )


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1]")
    return value


SUBCOMMANDS = [_add_predict, _add_train, _add_eval, _add_export, _add_make_shapes]


if __name__ == "__main__":
    sys.exit(main())
