"""`maskrcnn export`: write a model as an ONNX graph and check it against the eager model."""

import argparse

from maskrcnn.cli import options
from maskrcnn.cli.checks import OneOf
from maskrcnn.cli.paths import check_weights
from maskrcnn.cli.report import report
from maskrcnn.errors import OptionError
from maskrcnn.path_checks import existing_file, output_file


def add(subcommands) -> argparse.ArgumentParser:
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
    return parser


def check(args: argparse.Namespace) -> None:
    check_weights(args.weights)
    output_file("OUT.onnx", args.out)
    if args.check_image is not None:
        if args.no_check:
            raise OptionError(
                "--check-image names an image to compare on and --no-check skips the comparison: give one"
            )
        existing_file("--check-image", args.check_image)


def run(args: argparse.Namespace) -> int:
    """0 exported (and checked), 1 exported but the check failed."""
    from maskrcnn.export.run import ExportCheckFailed, export_and_check

    try:
        export_and_check(
            args.weights,
            args.out,
            check_image=args.check_image,
            check=not args.no_check,
            intensity=args.intensity,
            score_threshold=args.score_threshold,
        )
    except ExportCheckFailed as failed:
        report(f"error: {failed}")
        return 1
    return 0
