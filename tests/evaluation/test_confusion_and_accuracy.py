"""The confusion matrix and the microscopy tools' accuracy on cases worked out by hand."""

import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from PIL import Image
from pycocotools.coco import COCO

from maskrcnn.cli.main import main
from maskrcnn.evaluation.accuracy import IOU_THRESHOLDS, accuracy_report, format_accuracy
from maskrcnn.evaluation.confusion import confusion_matrix, row_normalised
from maskrcnn.evaluation.matching import image_overlaps

SIZE = 24


def rle(rows: slice, cols: slice) -> dict:
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[rows, cols] = 1
    encoded = mask_utils.encode(np.asfortranarray(mask))
    encoded["counts"] = encoded["counts"].decode()
    return encoded


def box(rows: slice, cols: slice) -> list[float]:
    return [cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start]


def ground_truth(objects: list[tuple[int, int, slice, slice, int]], images: int) -> dict:
    """objects: (image id, category id, rows, cols, iscrowd)."""
    annotations = []
    for index, (image_id, category, rows, cols, crowd) in enumerate(objects, start=1):
        annotations.append(
            {
                "id": index, "image_id": image_id, "category_id": category, "iscrowd": crowd,
                "segmentation": rle(rows, cols), "bbox": box(rows, cols),
                "area": (rows.stop - rows.start) * (cols.stop - cols.start),
            }
        )  # fmt: skip
    return {
        "images": [
            {"id": i, "file_name": f"{i}.png", "height": SIZE, "width": SIZE} for i in range(1, images + 1)
        ],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "cell"}, {"id": 2, "name": "debris"}],
    }


def index(document: dict) -> COCO:
    coco = COCO()
    coco.dataset = document
    coco.createIndex()
    return coco


def detection(image_id: int, category: int, rows: slice, cols: slice, score: float) -> dict:
    return {
        "image_id": image_id, "category_id": category, "score": score,
        "segmentation": rle(rows, cols), "bbox": box(rows, cols),
    }  # fmt: skip


A, B = 1, 2
TOP_LEFT, TOP_RIGHT = (slice(0, 10), slice(0, 10)), (slice(0, 10), slice(10, 20))
BOTTOM_LEFT, BOTTOM_RIGHT = (slice(10, 20), slice(0, 10)), (slice(12, 20), slice(12, 20))


def test_the_confusion_matrix_counts_confusions_misses_and_false_detections():
    truth = index(
        ground_truth(
            [(1, A, *TOP_LEFT, 0), (1, B, *TOP_RIGHT, 0), (1, A, *BOTTOM_LEFT, 0), (2, A, *BOTTOM_RIGHT, 1)],
            images=2,
        )
    )
    results = [
        detection(1, A, *TOP_LEFT, 0.9),  # right
        detection(1, A, *TOP_RIGHT, 0.8),  # debris taken for a cell
        detection(1, A, *BOTTOM_LEFT, 0.3),  # below the score threshold: the cell is missed
        detection(1, B, *BOTTOM_RIGHT, 0.7),  # on nothing: a false detection
        detection(2, B, *BOTTOM_RIGHT, 0.9),  # on a crowd region: not counted
    ]
    counts = confusion_matrix(image_overlaps(truth, results, 0.5), [A, B], iou_threshold=0.5)
    # rows: true cell, debris, background; columns: detected as cell, debris, background
    assert counts.tolist() == [[1, 0, 1], [1, 0, 0], [0, 1, 0]]
    assert row_normalised(counts).tolist() == [[0.5, 0, 0.5], [1, 0, 0], [0, 1, 0]]


def test_a_pair_below_the_iou_threshold_is_a_miss_and_a_false_detection():
    truth = index(ground_truth([(1, A, *TOP_LEFT, 0)], images=1))
    # rows 0:10, cols 4:14: 60 pixels shared of 140 -> IoU 0.43
    results = [detection(1, A, slice(0, 10), slice(4, 14), 0.9)]
    overlaps = image_overlaps(truth, results, 0.5)
    assert overlaps[0].ious[0, 0] == pytest.approx(60 / 140)
    assert confusion_matrix(overlaps, [A, B], 0.5).tolist() == [[0, 0, 1], [0, 0, 0], [1, 0, 0]]
    assert confusion_matrix(overlaps, [A, B], 0.4).tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0]]


def test_accuracy_per_image_and_averaged():
    truth = index(
        ground_truth(
            [(1, A, *TOP_LEFT, 0), (1, A, *TOP_RIGHT, 0), (1, A, *BOTTOM_LEFT, 0), (3, A, *TOP_LEFT, 0)],
            images=3,
        )
    )
    results = [
        detection(1, A, *TOP_LEFT, 0.9),  # IoU 1
        detection(1, A, slice(0, 10), slice(12, 22), 0.8),  # 80 shared of 120: IoU 0.667
        detection(1, A, *BOTTOM_RIGHT, 0.7),  # a false positive; the bottom-left cell is missed
        detection(3, A, *TOP_LEFT, 0.9),
    ]  # image 2: nothing to find, nothing found
    report = accuracy_report(image_overlaps(truth, results, 0.5), {1: "1.png", 2: "2.png", 3: "3.png"}, 0.5)
    assert (
        report["iou_thresholds"] == list(IOU_THRESHOLDS) == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9]
    )
    # image 1: up to IoU 0.65 TP 2, FP 1, FN 1 -> 2/4; from 0.7 TP 1, FP 2, FN 2 -> 1/5
    first = [0.5] * 4 + [0.2] * 5
    assert report["per_image"][0]["accuracy"] == pytest.approx(first)
    assert report["per_image"][1]["accuracy"] == [None] * 9
    assert report["per_image"][2]["accuracy"] == [1.0] * 9
    assert report["mean"] == pytest.approx([(a + 1) / 2 for a in first])
    assert report["dsb_score"] == pytest.approx(np.mean([(a + 1) / 2 for a in first]))
    assert report["images"] == 2
    assert report["tp"] == [3] * 4 + [2] * 5 and report["fn"] == [1] * 4 + [2] * 5
    assert "0.65 |    0.750 |" in format_accuracy(report)


def test_a_detection_of_another_class_is_no_true_positive_for_accuracy():
    truth = index(ground_truth([(1, A, *TOP_LEFT, 0)], images=1))
    report = accuracy_report(image_overlaps(truth, [detection(1, B, *TOP_LEFT, 0.9)], 0.5), {}, 0.5)
    assert report["mean"] == pytest.approx([0.0] * 9)  # TP 0, FP 1, FN 1


def test_eval_writes_the_confusion_matrix_and_the_accuracy(tmp_path):
    document = ground_truth([(1, A, *TOP_LEFT, 0), (1, B, *TOP_RIGHT, 0)], images=1)
    (tmp_path / "images").mkdir()
    Image.new("RGB", (SIZE, SIZE)).save(tmp_path / "images" / "1.png")
    (tmp_path / "gt.json").write_text(json.dumps(document))
    results = [detection(1, A, *TOP_LEFT, 0.9), detection(1, A, *TOP_RIGHT, 0.6)]
    (tmp_path / "results.json").write_text(json.dumps(results))
    argv = [
        "eval",
        "shapes",
        "--results",
        str(tmp_path / "results.json"),
        "--json",
        str(tmp_path / "gt.json"),
    ]
    argv += ["--images", str(tmp_path / "images"), "--out", str(tmp_path / "out"), "--metric", "accuracy"]
    assert main(argv) == 0
    confusion = json.loads((tmp_path / "out" / "confusion_matrix.json").read_text())
    assert confusion["classes"] == ["cell", "debris", "background"]
    assert confusion["counts"] == [[1, 0, 0], [1, 0, 0], [0, 0, 0]]
    assert (tmp_path / "out" / "confusion_matrix.png").stat().st_size > 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["accuracy"]["mean"] == pytest.approx([1 / 3] * 9)  # TP 1, FP 1, FN 1
    # per-class figures: the cell found at every IoU, the debris never (as debris)
    assert metrics["per_class"]["segm"]["cell"]["AP50"] == pytest.approx(1.0)
    assert metrics["per_class"]["segm"]["debris"]["AP"] == pytest.approx(0.0)
    # a higher score threshold leaves the confusion out
    argv += ["--match-score", "0.7"]
    assert main(argv) == 0
    confusion = json.loads((tmp_path / "out" / "confusion_matrix.json").read_text())
    assert confusion["counts"] == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]
