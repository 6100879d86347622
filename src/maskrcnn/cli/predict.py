"""`maskrcnn predict`: detect objects in images and folders; overlays and COCO results JSON."""

import argparse
import sys
from pathlib import Path

from maskrcnn.cli import options
from maskrcnn.cli.checks import WholeNumber
from maskrcnn.cli.paths import check_weights
from maskrcnn.config import DataConfig
from maskrcnn.path_checks import existing_path, output_folder


def add(subcommands) -> argparse.ArgumentParser:
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
    options.add_max_detections(parser)
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
    return parser


def check(args: argparse.Namespace) -> None:
    check_weights(args.weights)
    for path in args.inputs:
        existing_path("IMAGE_OR_DIR", path)
    output_folder("--out", args.out)
    options.check_tile_overlap(args.tile, args.tile_overlap)


def run(args: argparse.Namespace) -> int:
    # Each command imports its work when run, so none pays for the others' imports.
    from maskrcnn.inference.predict import predict_command

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
        max_detections=args.max_detections,
        report_error=_image_error,
    )


def _image_error(path: Path, problem: str) -> None:
    """An image the run skips, said as it goes (above the progress bar, when there is one)."""
    from tqdm import tqdm

    tqdm.write(f"error: {path}: {problem}", file=sys.stderr)
