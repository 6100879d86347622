"""`make demo`: the whole system on the built-in shapes dataset, from nothing.

1. writes the synthetic shapes dataset (data/shapes, skipped when already there),
2. trains configs/shapes.yaml on it (a small Mask R-CNN, from scratch, on the CPU),
3. evaluates it on the validation split (COCO box and mask AP),
4. leaves in runs/demo: the checkpoint, metrics.json, loss curves, precision-recall plot,
   and overlays of a dozen validation images,
5. prints a summary.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from maskrcnn.config import load_config
from maskrcnn.data.shapes import make_shapes, shapes_dataset_paths

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "shapes.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="data/shapes")
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    from maskrcnn.engine.evaluate_command import evaluate_command
    from maskrcnn.engine.predict import predict_command
    from maskrcnn.engine.trainer import FINAL_CHECKPOINT, train

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
        f"output_dir={out}",
        *args.overrides,
    ]
    # Step 3 evaluates once, with plots; the trainer's own end-of-run evaluation is not needed.
    config = load_config(args.config, [*overrides, "data.val_json=''"])
    print(f"[2/4] training {args.config} for {config.solver.max_iter} iterations")
    started = time.perf_counter()
    train(config, overwrite=True)  # the demo's folder holds the demo's own earlier run
    train_seconds = time.perf_counter() - started

    weights = out / FINAL_CHECKPOINT
    print("[3/4] evaluating on the validation split")
    code = evaluate_command(
        args.config,
        str(weights),
        annotation_json=str(paths["val_annotations"]),
        image_dir=str(paths["val_images"]),
        out_dir=str(out),
        overrides=overrides,
        vis=12,
    )
    if code:
        return code
    print("[4/4] drawing predictions on a dozen validation images")
    images = sorted(paths["val_images"].glob("*.png"))[:12]
    predict_command([str(p) for p in images], str(weights), str(out / "overlays"))

    metrics = json.loads((out / "metrics.json").read_text())
    print()
    print("maskrcnn demo summary")
    print(f"  iterations     {config.solver.max_iter}")
    print(f"  training time  {train_seconds / 60:.1f} min")
    print(f"  box AP         {100 * metrics['bbox']['AP']:.1f}")
    print(f"  mask AP        {100 * metrics['segm']['AP']:.1f}")
    print(f"  outputs        {out}/: model_final.pt, metrics.json, loss_curves.png, precision_recall.png,")
    print("                 overlays/ (predictions) and vis/ (ground truth | predictions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
