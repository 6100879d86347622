"""`make demo`: the whole system on the built-in shapes dataset, from nothing.

1. writes the synthetic shapes dataset (data/shapes, skipped when already there),
2. trains configs/shapes.yaml on it (a small Mask R-CNN, from scratch, on the CPU) on a time
   budget: 10 minutes for the training and its final evaluation on the validation split
   (COCO box and mask AP), the schedule fitted to the measured step time,
3. draws ground truth beside predictions for a dozen validation images,
4. draws prediction overlays for the same images,
and prints a summary; runs/demo holds the checkpoint, metrics.json, the loss curves and the
precision-recall plot, vis/ and overlays/.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from maskrcnn.builtin_configs import builtin_configs, resolve_config
from maskrcnn.config import load_config
from maskrcnn.data.shapes import make_shapes, shapes_dataset_paths
from maskrcnn.errors import OptionError

CONFIG = builtin_configs()["shapes"]  # packaged: the demo also runs from an installed wheel
BUDGET_MINUTES = 10.0
PICTURES = 12


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="data/shapes")
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--config", default=str(CONFIG), help="a YAML file or a built-in config's name")
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=BUDGET_MINUTES,
        help="minutes for training and its final evaluation (0: the config's solver.max_iter)",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        config_path = resolve_config(args.config, "--config")
    except OptionError as error:
        parser.error(str(error))  # usage and the one line, exit code 2

    from maskrcnn.engine.run_folder import FINAL_CHECKPOINT
    from maskrcnn.engine.trainer import train
    from maskrcnn.engine.training_data import validation_data
    from maskrcnn.evaluation.run import write_side_by_side
    from maskrcnn.inference.predict import predict_command

    paths = shapes_dataset_paths(args.data)
    if not paths["val_annotations"].exists():
        print(f"[1/4] writing the shapes dataset to {args.data}")
        make_shapes(args.data, 1000, 100, seed=0)
    else:
        print(f"[1/4] using the shapes dataset in {args.data}")
    out = Path(args.out)
    overrides = [
        f"data.train_json={paths['train_annotations']}",
        f"data.train_images={paths['train_images']}",
        f"data.val_json={paths['val_annotations']}",
        f"data.val_images={paths['val_images']}",
        f"output_dir={out}",
        f"solver.budget_minutes={args.budget_minutes}",
        *args.overrides,
    ]
    config = load_config(config_path, overrides)
    length = (
        f"on a {config.solver.budget_minutes:g}-minute budget (training and evaluation)"
        if config.solver.budget_minutes > 0
        else f"for {config.solver.max_iter} iterations"
    )
    print(f"[2/4] training {args.config} {length}")
    started = time.perf_counter()
    model = train(config, overwrite=True)  # the demo's folder holds the demo's own earlier run
    train_minutes = (time.perf_counter() - started) / 60

    print(f"[3/4] drawing ground truth | predictions for {PICTURES} validation images in {out / 'vis'}")
    validation = validation_data(config)
    write_side_by_side(model, validation, PICTURES, out / "vis")
    print("[4/4] drawing prediction overlays")
    images = sorted(paths["val_images"].glob("*.png"))[:PICTURES]
    predict_command([str(p) for p in images], str(out / FINAL_CHECKPOINT), str(out / "overlays"))

    metrics = json.loads((out / "metrics.json").read_text())
    iterations = [json.loads(line)["iteration"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    print()
    print("maskrcnn demo summary")
    print(f"  iterations     {max(iterations)}")
    print(f"  training time  {train_minutes:.1f} min (with the final evaluation)")
    print(f"  box AP         {100 * metrics['bbox']['AP']:.1f}")
    print(f"  mask AP        {100 * metrics['segm']['AP']:.1f}")
    print(f"  outputs        {out}/: model_final.pt, metrics.json, loss_curves.png, precision_recall.png,")
    print("                 overlays/ (predictions) and vis/ (ground truth | predictions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
