"""`maskrcnn eval`: COCO AP of a model (or of a results file) on a COCO-format split."""

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from maskrcnn.config import ConfigError, load_config
from maskrcnn.data.coco import CocoDataset
from maskrcnn.engine.evaluation import (
    evaluate_results,
    format_metrics,
    plot_precision_recall,
    predict_dataset,
    write_metrics,
)
from maskrcnn.engine.results import write_json_atomic
from maskrcnn.interop.load import load_model
from maskrcnn.interop.state_dicts import CheckpointError
from maskrcnn.visualize import draw_instances

RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.json"
PR_PLOT_FILE = "precision_recall.png"


def evaluate_command(
    config_path: str | None,
    weights: str | None,
    annotation_json: str | None = None,
    image_dir: str | None = None,
    out_dir: str | None = None,
    results_file: str | None = None,
    vis: int = 0,
    overrides: list[str] = (),
    device: str = "auto",
    precision: str = "fp32",
) -> int:
    """Returns the exit code: 0 evaluated, 2 bad input (printed as one `error:` line)."""
    try:
        config = load_config(config_path, list(overrides))
        annotation_json = annotation_json or config.data.val_json
        image_dir = image_dir or config.data.val_images
        if not annotation_json:
            raise ValueError("no annotations to evaluate against: give --json or data.val_json in the config")
        out = Path(out_dir or Path(config.output_dir) / "eval")
        out.mkdir(parents=True, exist_ok=True)
        model = dataset = None
        if results_file:
            results = _read_results(results_file)
        else:
            if not weights:
                raise ValueError("give --weights FILE (or --results FILE to evaluate saved detections)")
            model = load_model(weights, device=device)
            dataset = CocoDataset(annotation_json, image_dir, skip_bad_images=config.data.skip_bad_images)
            results = predict_dataset(model, dataset, precision=precision)
            write_json_atomic(results, out / RESULTS_FILE)
        metrics, evaluations = evaluate_results(annotation_json, results)
    except (ConfigError, CheckpointError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_metrics(metrics))
    write_metrics(metrics, out / METRICS_FILE)
    names = {c["id"]: c["name"] for c in json.loads(Path(annotation_json).read_text())["categories"]}
    plot_precision_recall(evaluations, names, out / PR_PLOT_FILE)
    if vis and model is not None:
        write_side_by_side(model, dataset, vis, out / "vis", precision)
    print(f"metrics, results and plots written to {out}")
    return 0


def _read_results(path: str) -> list[dict]:
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read results ({error})") from None
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise ValueError(f"{path}: a COCO results file is a list of objects")
    for index, entry in enumerate(results):
        for field in ("image_id", "category_id", "score"):
            if field not in entry:
                raise ValueError(f"{path}: entry {index} has no {field!r}")
    return results


def write_side_by_side(model, dataset: CocoDataset, count: int, out: Path, precision: str = "fp32") -> None:
    """Ground truth on the left, predictions on the right, for the first `count` images."""
    out.mkdir(parents=True, exist_ok=True)
    for index in range(min(count, len(dataset))):
        sample = dataset[index]
        if sample is None:
            continue
        image, target = sample
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        truth = draw_instances(
            pixels,
            target["boxes"],
            target["labels"],
            np.ones(len(target["labels"])),
            target["masks"] > 0,
            model.class_names,
        )
        detections = model.predict([image], precision)[0]
        predicted = draw_instances(
            pixels,
            detections["boxes"],
            detections["labels"],
            detections["scores"],
            detections["masks"],
            model.class_names,
            score_threshold=0.5,
        )
        canvas = Image.new("RGB", (truth.width * 2 + 8, truth.height), (255, 255, 255))
        canvas.paste(truth, (0, 0))
        canvas.paste(predicted, (truth.width + 8, 0))
        canvas.save(out / f"{Path(target['file_name']).stem}.png")
