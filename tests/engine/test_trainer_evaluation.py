"""The trainer's evaluation: the validation split is read once, before the first step, cleaned as
the training split is, and scored by all processes together under DDP."""

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from maskrcnn.data.coco import AnnotationWarning, CocoDataset
from maskrcnn.data.shapes import make_shapes
from maskrcnn.engine import training_data
from maskrcnn.engine.hooks import evaluation as evaluation_hook
from maskrcnn.engine.metrics import read_metrics
from maskrcnn.engine.trainer import train
from maskrcnn.evaluation.coco import evaluate_results, predict_dataset
from maskrcnn.interop.load import load_model
from maskrcnn.modeling.mask_rcnn import MaskRCNN
from maskrcnn.testing import shapes_training_config as tiny_config


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """The shapes dataset (6 training, 3 validation images) and a copy of its validation file
    with a polygon of two points, one of seven coordinates and an RLE of the wrong length."""
    root = tmp_path_factory.mktemp("shapes")
    make_shapes(root, 6, 3, seed=0)
    val = json.loads((root / "annotations" / "instances_val.json").read_text())
    image = val["images"][0]
    common = {"image_id": image["id"], "category_id": val["categories"][0]["id"], "iscrowd": 0}
    common["bbox"] = [4, 4, 8, 8]
    val["annotations"] += [
        {"id": 9001, "segmentation": [[4, 4, 12, 12]], **common},
        {"id": 9002, "segmentation": [[4, 4, 12, 4, 12, 12, 4]], **common},
        {"id": 9003, "segmentation": {"size": [image["height"], image["width"]], "counts": [5, 5]}, **common},
    ]
    (root / "annotations" / "instances_val_broken.json").write_text(json.dumps(val))
    return root


def one_process_evaluation(shapes: Path, run: Path) -> tuple[dict, list[dict]]:
    """(metrics, results) of the run's final model on the hand-cleaned (original) validation
    file, computed here in one process."""
    model = load_model(run / "model_final.pt", device="cpu")
    dataset = CocoDataset(
        shapes / "annotations" / "instances_val.json", shapes / "val", input_config=model.config.input
    )
    results = predict_dataset(model, dataset, progress=False)
    metrics, _ = evaluate_results(dataset, results)
    return json.loads(json.dumps(metrics).replace("NaN", "null")), results


def test_a_broken_validation_split_trains_and_scores_as_the_hand_cleaned_one(shapes, tmp_path):
    run = tmp_path / "run"
    broken = shapes / "annotations" / "instances_val_broken.json"
    with pytest.warns(AnnotationWarning, match="instances_val_broken.json: dropped 3 annotations"):
        train(tiny_config(shapes, run, "solver.max_iter=2", f"data.val_json={broken}"))
    written = json.loads((run / "metrics.json").read_text())
    assert written.pop("best")["iteration"] == 2  # the one evaluation: the best model's
    assert written == one_process_evaluation(shapes, run)[0]
    assert read_metrics(run / "metrics.jsonl")[-1]["segm_AP"] == written["segm"]["AP"]


@pytest.mark.parametrize("problem", ["missing file", "broken file", "missing folder"])
def test_a_bad_validation_split_fails_before_the_first_step(shapes, tmp_path, problem):
    if problem == "missing file":
        overrides, named = [f"data.val_json={tmp_path / 'nowhere.json'}"], "nowhere.json: annotation file not"
    elif problem == "broken file":
        (tmp_path / "val.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
        overrides, named = [f"data.val_json={tmp_path / 'val.json'}"], "val.json: field 'categories' is empty"
    else:
        overrides, named = [f"data.val_images={tmp_path / 'no_images'}"], "no_images: validation image folder"
    steps = []
    original = MaskRCNN.losses
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MaskRCNN, "losses", lambda *a: steps.append(1) or original(*a))
        with pytest.raises(ValueError, match=named):
            train(tiny_config(shapes, tmp_path / "run", "solver.max_iter=2", *overrides))
    assert steps == []


def test_the_validation_split_is_read_once_for_all_evaluations(shapes, tmp_path, monkeypatch):
    opened = []

    class Counting(CocoDataset):
        def __init__(self, annotation_file, *args, **kwargs):
            opened.append(Path(annotation_file).name)
            super().__init__(annotation_file, *args, **kwargs)

    monkeypatch.setattr(training_data, "CocoDataset", Counting)
    run = tmp_path / "run"
    train(tiny_config(shapes, run, "solver.max_iter=3", "solver.eval_period=1"))
    evaluations = [r for r in read_metrics(run / "metrics.jsonl") if "segm_AP" in r]
    assert [r["iteration"] for r in evaluations] == [1, 2, 3]
    assert sorted(opened) == ["instances_train.json", "instances_val.json"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Score threshold 0: even a model two steps old detects something in every image.
DDP_OVERRIDES = ("solver.max_iter=2", "solver.eval_period=1", "data.images_per_batch=1")
DDP_OVERRIDES += ("model.roi_heads.score_threshold=0",)


def _ddp_worker(rank: int, world_size: int, port: int, shapes: str, output: str, shares: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    seen = []
    original = CocoDataset.__getitem__

    def recording(self, item):
        seen.append(item)
        return original(self, item)

    CocoDataset.__getitem__ = recording  # a spawned process: nothing else runs in it
    scored = evaluation_hook.evaluate_results

    def keeping(ground_truth, results, *args, **kwargs):
        Path(shares, "results.json").write_text(json.dumps(results))  # rank 0's, gathered
        return scored(ground_truth, results, *args, **kwargs)

    evaluation_hook.evaluate_results = keeping
    config = tiny_config(Path(shapes), Path(output), *DDP_OVERRIDES)
    train(config)
    # validation images are indexed plainly; training samples come as (index, seed)
    Path(shares, f"rank{rank}.json").write_text(json.dumps([i for i in seen if isinstance(i, int)]))


def test_two_processes_share_the_validation_images_and_agree_with_one(shapes, tmp_path):
    output = tmp_path / "ddp"
    args = (2, _free_port(), str(shapes), str(output), str(tmp_path))
    mp.spawn(_ddp_worker, args=args, nprocs=2, join=True)
    # each rank scored the loss of its half of the 3 validation images, then predicted them,
    # at each of the 2 evaluations
    shares = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert shares == [[0, 2, 0, 2, 0, 2, 0, 2], [1, 1, 1, 1]]
    evaluations = [r for r in read_metrics(output / "metrics.jsonl") if "segm_AP" in r]
    assert [r["iteration"] for r in evaluations] == [1, 2]  # logged once, by rank 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers: the same float rounding
    try:
        metrics, results = one_process_evaluation(shapes, output)
    finally:
        torch.set_num_threads(threads)
    written = json.loads((output / "metrics.json").read_text())
    assert written.pop("best")["iteration"] in (1, 2)  # the run's best model, beside the figures
    assert written == metrics
    gathered = json.loads((tmp_path / "results.json").read_text())  # of the final evaluation
    assert len({r["image_id"] for r in results}) == 3  # detections in every validation image
    assert gathered == json.loads(json.dumps(results))  # the same detections, in the same order
