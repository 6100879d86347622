"""COCO evaluation gives exactly what pycocotools gives, with the dataset's own category ids."""

import contextlib
import io
import json
import math

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from maskrcnn import ModelConfig, build_model
from maskrcnn.config import InputConfig, RoIHeadsConfig
from maskrcnn.data.coco import CocoDataset
from maskrcnn.engine.checkpoint import save_checkpoint
from maskrcnn.engine.evaluate_command import evaluate_command
from maskrcnn.engine.evaluation import evaluate_results, label_to_category, predict_dataset

CATEGORY_IDS = (3, 17, 90)


def rectangle_mask(height, width, x0, y0, x1, y1) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


@pytest.fixture()
def dataset(tmp_path):
    """Two 64x80 images with rectangles of three categories whose ids are not contiguous."""
    images, annotations, masks = [], [], []
    boxes = {1: [(5, 5, 30, 25, 3), (40, 10, 70, 50, 17)], 2: [(10, 30, 35, 60, 90), (45, 5, 75, 20, 3)]}
    for image_id, items in boxes.items():
        Image.new("RGB", (80, 64), (30, 30, 30)).save(tmp_path / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": 64, "width": 80})
        for x0, y0, x1, y1, category in items:
            mask = rectangle_mask(64, 80, x0, y0, x1, y1)
            rle = mask_util.encode(np.asfortranarray(mask))
            rle["counts"] = rle["counts"].decode()
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": int(mask.sum()),
                    "segmentation": rle,
                    "iscrowd": 0,
                }
            )
            masks.append(mask)
    categories = [{"id": c, "name": f"thing{c}"} for c in CATEGORY_IDS]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path, annotations


def perfect_results(annotations) -> list[dict]:
    return [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 0.9,
            "segmentation": a["segmentation"],
        }
        for a in annotations
    ]


def reference_ap(gt_path, results, iou_type) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_path))
        evaluation = COCOeval(coco, coco.loadRes(results), iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return list(evaluation.stats[:6])


def test_perfect_predictions_score_one(dataset):
    path, annotations = dataset
    metrics, _ = evaluate_results(path, perfect_results(annotations))
    assert metrics["bbox"]["AP"] == pytest.approx(1.0)
    assert metrics["segm"]["AP"] == pytest.approx(1.0)
    assert set(metrics["per_class"]["segm"]) == {"thing3", "thing17", "thing90"}
    assert all(v == pytest.approx(1.0) for v in metrics["per_class"]["bbox"].values())


def test_known_misses_match_pycocotools_exactly(dataset):
    path, annotations = dataset
    results = perfect_results(annotations)[1:]  # one of the two "thing3" objects is missed
    results.append({**results[0], "bbox": [0, 0, 10, 10], "score": 0.95})  # a confident false positive
    metrics, _ = evaluate_results(path, results)
    for iou_type in ("bbox", "segm"):
        expected = reference_ap(
            path,
            [
                r if iou_type == "segm" else {k: v for k, v in r.items() if k != "segmentation"}
                for r in results
            ],
            iou_type,
        )
        ours = [metrics[iou_type][k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
        for a, b in zip(ours, expected):
            assert (math.isnan(a) and b < 0) or a == b
    # thing3 has two objects and one was found: its AP is about one half
    assert metrics["per_class"]["bbox"]["thing3"] == pytest.approx(0.5, abs=0.02)
    assert metrics["per_class"]["bbox"]["thing17"] < 1.0  # outranked by the false positive


def test_results_mode_reads_a_file(dataset, tmp_path, capsys):
    path, annotations = dataset
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps(perfect_results(annotations)))
    out = tmp_path / "eval"
    code = evaluate_command(
        None, None, annotation_json=str(path), results_file=str(results_file), out_dir=str(out)
    )
    assert code == 0
    written = json.loads((out / "metrics.json").read_text())
    assert written["segm"]["AP"] == pytest.approx(1.0)
    assert (out / "precision_recall.png").stat().st_size > 0
    assert "thing90" in capsys.readouterr().out


def test_bad_results_file_is_reported(dataset, tmp_path, capsys):
    path, _ = dataset
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 1, "score": 0.5}]))
    assert (
        evaluate_command(None, None, annotation_json=str(path), results_file=str(bad), out_dir=str(tmp_path))
        == 2
    )
    assert "bad.json: entry 0 has no 'category_id'" in capsys.readouterr().err


def test_model_results_use_the_dataset_category_ids(dataset, tmp_path):
    path, _ = dataset
    torch.manual_seed(0)
    config = ModelConfig(
        num_classes=4,
        class_names=("__background__", "thing3", "thing17", "thing90"),
        category_ids=CATEGORY_IDS,
        input=InputConfig(min_size=64, max_size=80),
        roi_heads=RoIHeadsConfig(score_threshold=0.0, detections_per_image=30),
    )
    model = build_model(config).eval()
    assert label_to_category(model) == {1: 3, 2: 17, 3: 90}
    results = predict_dataset(model, CocoDataset(str(path), str(tmp_path)), progress=False)
    assert results and {r["category_id"] for r in results} <= set(CATEGORY_IDS)
    assert {r["image_id"] for r in results} <= {1, 2}

    weights = tmp_path / "model.pt"
    save_checkpoint(weights, model)
    out = tmp_path / "eval_model"
    code = evaluate_command(
        None,
        str(weights),
        annotation_json=str(path),
        image_dir=str(tmp_path),
        out_dir=str(out),
        vis=1,
        device="cpu",
    )
    assert code == 0
    saved = json.loads((out / "results.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["bbox"]["AP"] == pytest.approx(reference_ap(path, saved, "bbox")[0])
    assert len(list((out / "vis").glob("*.png"))) == 1

    # bfloat16: the same images and categories, scores within bfloat16's rounding
    out_bf16 = tmp_path / "eval_bf16"
    code = evaluate_command(
        None,
        str(weights),
        annotation_json=str(path),
        image_dir=str(tmp_path),
        out_dir=str(out_bf16),
        device="cpu",
        precision="bf16",
    )
    assert code == 0
    half = json.loads((out_bf16 / "results.json").read_text())
    assert {r["image_id"] for r in half} == {r["image_id"] for r in saved}
    assert abs(max(r["score"] for r in half) - max(r["score"] for r in saved)) < 0.05
