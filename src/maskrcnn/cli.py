"""The `maskrcnn` command: predict, train, eval, make-shapes.

The parser only parses; each subcommand's work lives in the engine module named after it.
"""

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskrcnn", description="Mask R-CNN in plain PyTorch.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = commands.add_parser("predict", help="detect and segment objects in images or folders")
    predict.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    predict.add_argument("--weights", required=True, help="a maskrcnn checkpoint or a torchvision state dict")
    predict.add_argument("--out", required=True, help="folder for overlays and predictions.json")
    predict.add_argument("--score-threshold", type=float, default=0.5)
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    predict.add_argument(
        "--polygons", action="store_true", help="masks as polygons instead of RLE in the JSON"
    )

    train = commands.add_parser("train", help="train on a COCO-format dataset")
    train.add_argument("config", help="a YAML config, e.g. configs/shapes.yaml")
    train.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. solver.base_lr=0.01"
    )
    train.add_argument("--train-json")
    train.add_argument("--train-images")
    train.add_argument("--val-json")
    train.add_argument("--val-images")
    train.add_argument("--out", help="run folder (output_dir)")
    train.add_argument("--max-iter", type=int)
    train.add_argument("--resume", action="store_true", help="continue from the run folder's last.pt")
    train.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images with a warning")

    evaluate = commands.add_parser("eval", help="COCO box and mask AP on a COCO-format split")
    evaluate.add_argument("config", help="a YAML config (its validation split is the default)")
    evaluate.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    evaluate.add_argument("--weights", help="the model to evaluate")
    evaluate.add_argument("--json", help="annotations (default: data.val_json)")
    evaluate.add_argument("--images", help="image folder (default: data.val_images)")
    evaluate.add_argument("--out", help="folder for results.json, metrics.json and plots")
    evaluate.add_argument("--results", help="evaluate this COCO results file instead of running a model")
    evaluate.add_argument(
        "--vis", type=int, default=0, metavar="N", help="write N ground-truth/prediction pairs"
    )
    evaluate.add_argument("--device", default="auto")

    shapes = commands.add_parser("make-shapes", help="write the synthetic shapes dataset (COCO format)")
    shapes.add_argument("out")
    shapes.add_argument("--train", type=int, default=1000)
    shapes.add_argument("--val", type=int, default=100)
    shapes.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "predict":
        from maskrcnn.engine.predict import predict_command

        return predict_command(
            args.inputs, args.weights, args.out, args.score_threshold, args.device, args.polygons
        )
    if args.command == "train":
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
            skip_bad_images=args.skip_bad_images,
        )
    if args.command == "eval":
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
        )
    from maskrcnn.engine.train_command import make_shapes_command

    return make_shapes_command(args.out, args.train, args.val, args.seed)


if __name__ == "__main__":
    sys.exit(main())
