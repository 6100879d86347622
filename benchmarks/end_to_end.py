"""`maskrcnn train` against a torchvision training loop for the same wall time, on shapes.

Ours: the command a user types, `maskrcnn train configs/shapes.yaml --budget-minutes M`
(set-up, data loading, the loop, checkpoints and the final evaluation all inside M).
Theirs: torchvision's MaskRCNN built around a copy of the same trunk and FPN with the same
anchors, proposal counts, RoI sampling and heads (`training.shapes_models`), trained in a
plain loop over the training images decoded once into memory, with the same recipe: batch,
multi-scale sizes, flips, SGD, gradient clipping, warm-up and schedule shape, the length
fitted to the same budget by the same rule (`engine.budget.Budget`), then scored on
the validation split by the same COCO evaluation. Prints iterations, iterations per second,
wall time and box/mask AP for both.

    python benchmarks/training.py --end-to-end 600
"""

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

from maskrcnn.config import load_config
from maskrcnn.data.coco import CocoDataset
from maskrcnn.engine.budget import Budget, EndCost
from maskrcnn.engine.optimizer import make_optimizer
from maskrcnn.engine.schedule import Schedule
from maskrcnn.evaluation.coco import evaluate_results
from maskrcnn.evaluation.results import detections_to_coco

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "shapes.yaml"


def data_overrides(data: Path) -> list[str]:
    annotations = data / "annotations"
    return [
        f"data.train_json={annotations / 'instances_train.json'}",
        f"data.train_images={data / 'train'}",
        f"data.val_json={annotations / 'instances_val.json'}",
        f"data.val_images={data / 'val'}",
    ]


def run_ours(seconds: float, data: Path, out: Path, overrides: list[str]) -> dict:
    command = [sys.executable, "-m", "maskrcnn", "train", str(CONFIG), *data_overrides(data)]
    command += ["--out", str(out), "--overwrite", "--budget-minutes", f"{seconds / 60:g}", *overrides]
    started = time.monotonic()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - started
    metrics = json.loads((out / "metrics.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    iterations = max(r["iteration"] for r in records)
    return _row(iterations, wall, metrics)


def run_torchvision(seconds: float, data: Path, overrides: list[str], seed: int = 0) -> dict:
    from training import shapes_models  # this folder's module

    started = time.monotonic()
    config = load_config(str(CONFIG), [*data_overrides(data), *overrides])
    solver, recipe = config.solver, config.data
    random.seed(seed)
    torch.manual_seed(seed)
    _, model, _, _ = shapes_models((f"model.num_classes={train_set_classes(recipe)}",))
    model.transform.min_size = tuple(recipe.min_sizes_train)  # torchvision picks one per batch
    model.transform.max_size = recipe.max_size_train
    train_set = CocoDataset(recipe.train_json, recipe.train_images)
    val_set = CocoDataset(recipe.val_json, recipe.val_images)
    samples = [train_set[i] for i in range(len(train_set))]  # decoded once: preloaded tensors
    validation = [val_set[i] for i in range(len(val_set))]
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(parameters, solver)
    budget = Budget(
        seconds,
        time.monotonic,
        started,
        Schedule.from_solver(solver),
        EndCost(len(validation)),  # no checkpoint written
        _end_timer(model, validation, config),
    )
    budget.time_end()
    model.train()
    iteration = 0
    while not budget.finished():
        step_started = time.perf_counter()
        images, targets = _batch(samples, recipe.images_per_batch, recipe.flip_probability)
        for group in optimizer.param_groups:
            group["lr"] = solver.base_lr * budget.factor(iteration)
        losses = model(images, targets)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(parameters, solver.clip_grad_norm)
        optimizer.step()
        iteration += 1
        budget.after_step(iteration, time.perf_counter() - step_started)
    metrics = _evaluate(model, val_set, validation, config)
    return _row(iteration, time.monotonic() - started, metrics)


def train_set_classes(recipe) -> int:
    """The number of classes the trainer gives the model: the training set's categories and
    the background."""
    return len(json.loads(Path(recipe.train_json).read_text())["categories"]) + 1


def _batch(samples, size: int, flip_probability: float):
    images, targets = [], []
    for image, target in random.sample(samples, size):
        boxes, masks = target["boxes"], target["masks"]
        if random.random() < flip_probability:
            width = image.shape[-1]
            image, masks = image.flip(-1), masks.flip(-1)
            boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
        images.append(image)
        targets.append({"boxes": boxes, "labels": target["labels"], "masks": masks})
    return images, targets


def _test_mode(model, config) -> None:
    model.eval()
    model.transform.min_size = (config.model.input.min_size,)
    model.transform.max_size = config.model.input.max_size


def _end_timer(model, validation, config, count: int = 2):
    """As the trainer times the end: inference on the next `count` validation images."""
    cursor = iter(range(10**9))

    @torch.no_grad()
    def time_images() -> int:
        _test_mode(model, config)
        for _ in range(count):
            image, _ = validation[next(cursor) % len(validation)]
            model([image])
        model.transform.min_size = tuple(config.data.min_sizes_train)
        model.transform.max_size = config.data.max_size_train
        model.train()
        return count

    return time_images


@torch.no_grad()
def _evaluate(model, val_set, validation, config) -> dict:
    _test_mode(model, config)
    category_ids = {label: category for label, category in enumerate([0, *val_set.category_ids])}
    results = []
    for image, target in validation:
        (output,) = model([image])
        output["masks"] = output["masks"][:, 0] > 0.5  # (D, 1, H, W) probabilities -> (D, H, W)
        results.extend(detections_to_coco(target["image_id"], output, category_ids=category_ids))
    metrics, _ = evaluate_results(val_set, results)
    return metrics


def _row(iterations: int, wall: float, metrics: dict) -> dict:
    return {
        "iterations": iterations,
        "seconds": wall,
        "box": 100 * metrics["bbox"]["AP"],
        "mask": 100 * metrics["segm"]["AP"],
    }


def main(seconds: float, data: str = "data/shapes", out: str = "runs/end_to_end", overrides=()) -> None:
    from timing import machine

    data = Path(data)
    if not (data / "annotations" / "instances_val.json").exists():
        subprocess.run([sys.executable, "-m", "maskrcnn", "make-shapes", str(data)], check=True)
    rows = {
        "maskrcnn train": run_ours(seconds, data, Path(out), list(overrides)),
        "torchvision loop": run_torchvision(seconds, data, list(overrides)),
    }
    print(f"# end to end, {seconds:g} s budget, configs/shapes.yaml, {machine()}")
    print("| run | iterations | it/s | wall time (s) | box AP | mask AP |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        rate = row["iterations"] / row["seconds"]
        print(
            f"| {name} | {row['iterations']} | {rate:.2f} | {row['seconds']:.0f} | "
            f"{row['box']:.1f} | {row['mask']:.1f} |"
        )
