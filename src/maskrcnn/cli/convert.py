"""`maskrcnn convert FORMAT SOURCE... --out F.json`: labels from the tools people label with as
COCO instance JSON that `maskrcnn train` reads as it is (`data.converters`)."""

import argparse
from pathlib import Path

from maskrcnn.cli.checks import Number, OneOf, WholeNumber
from maskrcnn.errors import OptionError
from maskrcnn.path_checks import existing_file, existing_folder, output_file

FORMATS = {
    # format -> (its sources, what they are)
    "masks": (("IMAGES_DIR", "LABELS_DIR"), "instance label images, matched to images by file stem"),
    "yolo": (("DATA.yaml",), "Ultralytics YOLO segmentation labels of a data.yaml's split"),
    "labelme": (("DIR",), "a folder of LabelMe .json files"),
}
# Options of one format only: (option, its attribute, its format).
FORMAT_OPTIONS = (
    ("--class-name", "class_name", "masks"),
    ("--classes", "classes", "masks"),
    ("--split", "split", "yolo"),
    ("--require-masks", "require_masks", "yolo"),
)


def add(subcommands) -> argparse.ArgumentParser:
    formats = "; ".join(f"{name} {' '.join(sources)}: {what}" for name, (sources, what) in FORMATS.items())
    parser = subcommands.add_parser(
        "convert",
        help="labels of LabelMe, YOLO or instance label images as COCO JSON",
        description=(
            f"Write COCO instance JSON from other labels ({formats}). Polygons stay polygons, label "
            "images become exact RLE masks; file names are relative to the images folder to pass "
            "to train as --train-images. Category ids 1.. follow the order of yolo's names, of the "
            "class table's label values (masks) or of the sorted label names (labelme: folders "
            "converted apart with the same classes agree). Image sizes are as displayed (EXIF "
            "orientation applied), as train reads them. Prints one line: the images, the instances "
            "per class, what was skipped and why. Exit code 2 for a bad input, naming the file and "
            "the line or shape."
        ),
    )
    parser.add_argument(
        "format", type=OneOf(*FORMATS), metavar="FORMAT", help="the labels' format: masks, yolo or labelme"
    )
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="what the format reads (see above)")
    parser.add_argument("--out", required=True, metavar="F.json", help="the COCO file to write")
    parser.add_argument(
        "--val-fraction",
        type=Number(0.0, 0.9),
        default=0.0,
        metavar="F",
        help="write F_train.json and F_val.json instead, this share of the images in the second (at "
        "least one image in each: fewer than 2 images are refused); 0: one file",
    )
    parser.add_argument("--seed", type=WholeNumber(0), default=0, metavar="S", help="the split's random seed")
    parser.add_argument(
        "--class-name", metavar="NAME", help="masks: the class of every instance (default: object)"
    )
    parser.add_argument(
        "--classes",
        metavar="CSV",
        help="masks: a class per label value, rows 'value,class name' (default: none, every instance "
        "of --class-name)",
    )
    parser.add_argument(
        "--split", metavar="NAME", help="yolo: the data.yaml split to convert (default: train)"
    )
    parser.add_argument(
        "--require-masks",
        action="store_true",
        help="yolo: refuse box-only label lines (default: keep them as box-only instances)",
    )
    return parser


def check(args: argparse.Namespace) -> None:
    sources, _ = FORMATS[args.format]
    if len(args.sources) != len(sources):
        raise OptionError(
            f"convert {args.format} takes {' '.join(sources)}, got {len(args.sources)} source"
            f"{'s' * (len(args.sources) != 1)}: {' '.join(args.sources)}"
        )
    for option, attribute, only in FORMAT_OPTIONS:
        given = getattr(args, attribute)
        if given not in (None, False) and args.format != only:
            raise OptionError(f"{option}: an option of convert {only}, not of convert {args.format}")
    if args.class_name is not None and args.classes is not None:
        raise OptionError("--class-name names the one class and --classes one per label value: give one")
    if args.format == "masks":
        for name, path in zip(sources, args.sources):
            existing_folder(name, path)
    elif args.format == "yolo":
        existing_file("DATA.yaml", args.sources[0])
    else:
        existing_folder("DIR", args.sources[0])
    if args.classes is not None:
        existing_file("--classes", args.classes)
    output_file("--out", args.out)


def run(args: argparse.Namespace) -> int:
    from maskrcnn.data.converters import label_images, labelme, yolo
    from maskrcnn.data.converters.coco_file import write_coco
    from maskrcnn.errors import user_errors

    with user_errors(ValueError, OSError):
        if args.format == "masks":
            classes = label_images.read_classes(args.classes) if args.classes else None
            images = args.sources[0]
            builder = label_images.convert_label_images(
                images, args.sources[1], args.class_name or "object", classes
            )
        elif args.format == "yolo":
            builder, images = yolo.convert_yolo(args.sources[0], args.split or "train", args.require_masks)
        else:
            images = args.sources[0]
            builder = labelme.convert_labelme(images)
        written = write_coco(builder, Path(args.out), args.val_fraction, args.seed)
    files = ", ".join(map(str, written))
    print(f"{builder.summary()} -> {files} (images folder for --train-images or --val-images: {images})")
    return 0
