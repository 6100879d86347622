"""COCO evaluation gives exactly what pycocotools gives, with the dataset's own category ids."""

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from maskrcnn import ModelConfig, build_model
from maskrcnn.checkpoint import save_checkpoint
from maskrcnn.cli.evaluate import evaluate_command
from maskrcnn.cli.main import main
from maskrcnn.config import InputConfig, RoIHeadsConfig
from maskrcnn.data.coco import AnnotationWarning, CocoDataset
from maskrcnn.evaluation.coco import (
    coco_ground_truth,
    evaluate_results,
    label_to_category,
    predict_dataset,
)
from maskrcnn.evaluation.reports import format_metrics, plot_precision_recall
from maskrcnn.testing import tiny_model_config

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


def reference_ap(gt_path, results, iou_type, categories=None) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_path))
        evaluation = COCOeval(coco, coco.loadRes(results), iou_type)
        if categories is not None:
            evaluation.params.catIds = categories
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
    assert all(v["AP"] == pytest.approx(1.0) for v in metrics["per_class"]["bbox"].values())


def test_a_failed_plot_leaves_the_earlier_picture_whole(dataset, tmp_path, monkeypatch):
    import matplotlib.figure

    path, annotations = dataset
    _, evaluations = evaluate_results(path, perfect_results(annotations))
    picture = tmp_path / "precision_recall.png"
    plot_precision_recall(evaluations, {3: "thing3", 17: "thing17", 90: "thing90"}, picture)
    good = picture.read_bytes()
    assert good.startswith(b"\x89PNG")

    def crash(figure, target, **kwargs):  # a crash half-way through writing
        Path(target).write_bytes(good[:100])
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", crash)
    with pytest.raises(OSError, match="disk full"):
        plot_precision_recall(evaluations, {3: "thing3", 17: "thing17", 90: "thing90"}, picture)
    assert picture.read_bytes() == good
    assert not list(tmp_path.glob(".*tmp"))  # no temporary left


def test_no_detection_scores_zero_where_there_are_objects_and_nothing_where_there_are_none(dataset):
    path, _ = dataset
    document = json.loads(path.read_text())
    document["categories"].append({"id": 99, "name": "thing99"})  # a class without objects
    path.write_text(json.dumps(document))
    metrics, evaluations = evaluate_results(path, [])
    assert evaluations == {}  # no curve to draw
    for iou_type in ("bbox", "segm"):
        assert metrics[iou_type]["AP"] == 0.0 and metrics[iou_type]["APm"] == 0.0
        assert math.isnan(metrics[iou_type]["APl"])  # no object over 96x96 pixels
        per_class = metrics["per_class"][iou_type]
        assert per_class["thing3"]["AP"] == 0.0 and per_class["thing90"]["APs"] == 0.0
        assert math.isnan(per_class["thing90"]["APm"])  # its one object is small
        assert all(math.isnan(v) for v in per_class["thing99"].values())


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
    assert metrics["per_class"]["bbox"]["thing3"]["AP"] == pytest.approx(0.5, abs=0.02)
    assert metrics["per_class"]["bbox"]["thing17"]["AP"] < 1.0  # outranked by the false positive
    # each class's figures are COCOeval's summary of that class alone
    names = {3: "thing3", 17: "thing17", 90: "thing90"}
    for iou_type in ("bbox", "segm"):
        entries = [
            r if iou_type == "segm" else {k: v for k, v in r.items() if k != "segmentation"} for r in results
        ]
        for category, name in names.items():
            alone = reference_ap(path, entries, iou_type, categories=[category])
            ours = [
                metrics["per_class"][iou_type][name][k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")
            ]
            for a, b in zip(ours, alone):
                assert (math.isnan(a) and b < 0) or a == pytest.approx(b, abs=1e-12), (
                    iou_type,
                    name,
                    ours,
                    alone,
                )
    table = format_metrics(metrics)
    assert "| box AP per class |" in table and "| thing17" in table


def test_results_that_name_their_files_are_scored_against_those_images(dataset, tmp_path, capsys):
    # predict numbers images by their place among its inputs and writes each entry's file name;
    # here its ids are the other way round from the ground truth's
    path, annotations = dataset
    results = perfect_results(annotations)
    for entry in results:
        entry["file_name"] = str(tmp_path / f"{entry['image_id']}.png")
        entry["image_id"] = 3 - entry["image_id"]
    results[0]["file_name"] = f"somewhere/else/{annotations[0]['image_id']}.png"  # its ending names the file
    results.append({**results[1], "file_name": "other/9.png"})  # not an image of the split
    results_file = tmp_path / "results.json"
    results_file.write_text(json.dumps(results))
    out = tmp_path / "eval"
    code = evaluate_command(
        None, None, annotation_json=str(path), results_file=str(results_file), out_dir=str(out)
    )
    assert code == 0
    assert json.loads((out / "metrics.json").read_text())["segm"]["AP"] == pytest.approx(1.0)
    printed = capsys.readouterr().out
    expected = f"{results_file}: {len(annotations)} entries took the image_id of the ground truth's image "
    assert expected in printed
    assert f"1 entry of 1 image not in {path} left out (other/9.png)" in printed
    # without file names, the ids are all there is: the swapped ids score 0
    for entry in results:
        del entry["file_name"]
    results_file.write_text(json.dumps(results[:-1]))
    evaluate_command(None, None, annotation_json=str(path), results_file=str(results_file), out_dir=str(out))
    assert json.loads((out / "metrics.json").read_text())["segm"]["AP"] == 0.0


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


# A validation split that pycocotools cannot read: the valid file plus three broken annotations.
HEIGHT, WIDTH = 64, 80


def as_rle(segmentation) -> dict:
    """pycocotools' own reading of a polygon list or an RLE of a HEIGHT x WIDTH image."""
    if isinstance(segmentation, list):
        return mask_util.merge(mask_util.frPyObjects(segmentation, HEIGHT, WIDTH))
    return segmentation


def rle_of(mask) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode()}


def polygon_of(x0, y0, x1, y1) -> list:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def write_split(path, annotations) -> None:
    images = [{"id": i, "file_name": f"{i}.png", "height": HEIGHT, "width": WIDTH} for i in (1, 2)]
    categories = [{"id": c, "name": f"thing{c}"} for c in CATEGORY_IDS]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))


def valid_annotations() -> list[dict]:
    """Rectangles as RLE and as polygons, and one crowd region; area and bbox as pycocotools has them."""
    items = [
        (1, 3, (5, 5, 30, 25), "rle", 0),
        (1, 17, (40, 10, 70, 50), "polygon", 0),
        (1, 3, (50, 52, 80, 64), "rle", 1),  # a crowd of thing3 along the bottom right
        (2, 90, (10, 30, 35, 60), "polygon", 0),
        (2, 3, (45, 5, 75, 20), "rle", 0),
        (2, 17, (0, 0, 20, 12), "rle", 0),
    ]
    annotations = []
    for image_id, category, (x0, y0, x1, y1), kind, iscrowd in items:
        mask = rectangle_mask(HEIGHT, WIDTH, x0, y0, x1, y1)
        segmentation = rle_of(mask) if kind == "rle" else polygon_of(x0, y0, x1, y1)
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": category,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": float(mask_util.area(as_rle(segmentation))),
                "segmentation": segmentation,
                "iscrowd": iscrowd,
            }
        )
    return annotations


def broken_annotations() -> list[dict]:
    """A polygon of two points, one of seven coordinates, and an RLE of 10 pixels out of 5120."""
    segmentations = [
        (1, 17, [[10, 10, 20, 20]]),
        (2, 3, [[10, 10, 20, 10, 20, 20, 10]]),
        (1, 90, {"size": [HEIGHT, WIDTH], "counts": [7, 3]}),
    ]
    return [
        {"id": 100 + i, "image_id": image, "category_id": category, "segmentation": segmentation}
        | {"iscrowd": 0, "area": 100.0, "bbox": [10, 10, 10, 10]}
        for i, (image, category, segmentation) in enumerate(segmentations)
    ]


@pytest.fixture()
def split_files(tmp_path):
    """(broken file, hand-cleaned file): the same split with and without three broken annotations."""
    clean, broken = tmp_path / "clean.json", tmp_path / "broken.json"
    write_split(clean, valid_annotations())
    annotations = valid_annotations()
    annotations[2:2] = broken_annotations()  # in the middle of the file
    write_split(broken, annotations)
    return broken, clean


def detections() -> list[dict]:
    """Found, missed, a confident false positive, and a confident detection on the crowd."""
    results = [
        {
            **{k: a[k] for k in ("image_id", "category_id", "bbox")},
            "score": 0.9,
            "segmentation": rle_of(mask_util.decode(as_rle(a["segmentation"]))),
        }
        for a in valid_annotations()
        if a["id"] in (1, 2, 4)
    ]
    for image_id, score, (x0, y0, x1, y1) in ((2, 0.95, (30, 40, 45, 60)), (1, 0.99, (55, 54, 75, 64))):
        mask = rectangle_mask(HEIGHT, WIDTH, x0, y0, x1, y1)
        box = [x0, y0, x1 - x0, y1 - y0]
        entry = {"image_id": image_id, "category_id": 3, "bbox": box, "score": score}
        results.append({**entry, "segmentation": rle_of(mask)})
    return results


def reference_stats(gt_path, results) -> dict[str, list[float]]:
    boxes_only = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
    return {"bbox": reference_ap(gt_path, boxes_only, "bbox"), "segm": reference_ap(gt_path, results, "segm")}


def assert_same_as_reference(metrics, reference) -> None:
    for iou_type, stats in reference.items():
        ours = [metrics[iou_type][k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
        for a, b in zip(ours, stats):
            assert (math.isnan(a) and b < 0) or a == b, (iou_type, ours, stats)


def test_pycocotools_cannot_read_the_broken_split(split_files):
    broken, _ = split_files
    with pytest.raises(TypeError):  # pycocotools' "Argument 'bb' has incorrect type"
        reference_stats(broken, detections())


def test_a_broken_split_scores_as_its_hand_cleaned_self(split_files):
    broken, clean = split_files
    results = detections()
    with pytest.warns(AnnotationWarning, match="dropped 3 annotations"):
        metrics, _ = evaluate_results(broken, results)
    assert results == detections()  # pycocotools adds fields to what it gets: not to ours
    reference = reference_stats(clean, results)
    assert_same_as_reference(metrics, reference)
    assert 0 < metrics["bbox"]["AP"] < 1 and 0 < metrics["segm"]["AP"] < 1
    # all of it, per class too (json.dumps: NaN, "no such objects", equals itself there)
    assert json.dumps(metrics) == json.dumps(evaluate_results(CocoDataset(clean, ""), results)[0])


def test_crowd_regions_ignore_the_detections_on_them(split_files, tmp_path):
    _, clean = split_files
    results = detections()
    metrics, _ = evaluate_results(clean, results)
    assert_same_as_reference(metrics, reference_stats(clean, results))
    # Without the crowd region the detection on it is a confident false positive.
    no_crowd = tmp_path / "no_crowd.json"
    write_split(no_crowd, [a for a in valid_annotations() if not a["iscrowd"]])
    without, _ = evaluate_results(no_crowd, results)
    assert without["per_class"]["bbox"]["thing3"]["AP"] < metrics["per_class"]["bbox"]["thing3"]["AP"]
    assert without["segm"]["AP"] < metrics["segm"]["AP"]


def test_ground_truth_has_mask_areas_boxes_and_crowd_flags(split_files):
    broken, clean = split_files
    with pytest.warns(AnnotationWarning):
        ours = coco_ground_truth(CocoDataset(broken, ""))
    raw = json.loads(clean.read_text())["annotations"]
    got = sorted(ours.dataset["annotations"], key=lambda a: (a["image_id"], a["bbox"]))
    want = sorted(raw, key=lambda a: (a["image_id"], a["bbox"]))
    assert [(a["image_id"], a["category_id"], a["bbox"], a["area"], a["iscrowd"]) for a in got] == [
        (a["image_id"], a["category_id"], a["bbox"], a["area"], a["iscrowd"]) for a in want
    ]
    assert [a["id"] for a in ours.dataset["annotations"]] == list(range(1, len(raw) + 1))


def test_results_of_unknown_images_are_a_value_error(split_files):
    _, clean = split_files
    with pytest.raises(ValueError, match="1 image ids not in the ground truth: 7"):
        evaluate_results(clean, [{**detections()[0], "image_id": 7}])


CONFIG = Path(__file__).resolve().parents[2] / "configs" / "shapes.yaml"


@pytest.fixture()
def split_with_images(split_files):
    """(broken file, hand-cleaned file, image folder, a tiny model's checkpoint) of the split above."""
    broken, clean = split_files
    rng = np.random.default_rng(0)
    for image_id in (1, 2):
        pixels = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(clean.parent / f"{image_id}.png")
    torch.manual_seed(3)  # random weights some of whose boxes overlap objects: AP50 above 0
    names = ("__background__", "thing3", "thing17", "thing90")
    weights = clean.parent / "model.pt"
    save_checkpoint(weights, build_model(tiny_model_config(names, CATEGORY_IDS, HEIGHT, WIDTH, 30)))
    return broken, clean, clean.parent, weights


def run_eval(json_file, image_dir, weights, out, *extra) -> int:
    args = ["eval", str(CONFIG), "--json", str(json_file), "--images", str(image_dir), "--out", str(out)]
    return main([*args, "--weights", str(weights), "--device", "cpu", *extra])


def test_eval_command_scores_a_broken_split_as_the_hand_cleaned_one(split_with_images, tmp_path, capsys):
    broken, clean, images, weights = split_with_images
    assert run_eval(broken, images, weights, tmp_path / "broken") == 0
    warned = f"warning: {broken}: dropped 3 annotations (1 fewer than 3 polygon points, 1 malformed polygon"
    assert capsys.readouterr().err.startswith(warned)  # the command's one line per warning
    assert run_eval(clean, images, weights, tmp_path / "clean") == 0
    assert "warning" not in capsys.readouterr().err
    results = (tmp_path / "broken" / "results.json").read_text()
    assert results == (tmp_path / "clean" / "results.json").read_text()
    metrics = json.loads((tmp_path / "broken" / "metrics.json").read_text())
    assert metrics == json.loads((tmp_path / "clean" / "metrics.json").read_text())
    reference = reference_stats(clean, json.loads(results))
    for iou_type, stats in reference.items():
        ours = [metrics[iou_type][k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
        assert ours == [None if s < 0 else s for s in stats]
    assert metrics["bbox"]["AP50"] > 0  # else the comparison above says little

    # --results: the saved detections, scored against the broken file, give the same numbers
    out = tmp_path / "from_results"
    saved = tmp_path / "broken" / "results.json"
    code = main(["eval", str(CONFIG), "--json", str(broken), "--results", str(saved), "--out", str(out)])
    assert code == 0  # (the same warning again, which Python shows once per process)
    assert json.loads((out / "metrics.json").read_text()) == metrics


@pytest.mark.parametrize(
    "entry, problem",
    [
        ({"image_id": 7}, "entry 0 has image_id 7, not an image of the ground truth"),
        ({"image_id": "1"}, "entry 0 has image_id '1', not an image of the ground truth"),
        ({"score": float("nan")}, "entry 0 has score nan, not a finite number"),
        ({"bbox": [1, 2, 3]}, "entry 0 has bbox [1, 2, 3], not [x, y, width, height]"),
        ({"segmentation": [[1, 1, 5, 1, 5, 5]]}, "entry 0 has a polygon segmentation"),
        ({"segmentation": {"size": [64, 80], "counts": "0"}}, "entry 0 has an unusable segmentation"),
        ({"segmentation": {"size": [8, 8], "counts": [64]}}, "RLE size differs from the image size"),
    ],
)
def test_results_pycocotools_would_trip_over_are_reported(split_files, tmp_path, capsys, entry, problem):
    _, clean = split_files
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{**detections()[0], **entry}]))
    code = evaluate_command(None, None, str(clean), results_file=str(results), out_dir=str(tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {results}: ") and problem in err
    assert len(err.strip().splitlines()) == 1


def test_side_by_side_pictures_of_images_with_one_stem_do_not_overwrite_each_other(tmp_path):
    from types import SimpleNamespace

    from maskrcnn.evaluation.run import vis_paths

    names = ["x.webp", "x.bmp", "cam1/0001.png", "cam2/0001.png", "X.gif", "y.png"]
    split = SimpleNamespace(records=[SimpleNamespace(file_name=name) for name in names])
    paths = vis_paths(split, 5, tmp_path)
    assert [p.name for p in paths] == ["x.png", "x-2.png", "0001.png", "0001-2.png", "X-3.png"]
    assert all(p.parent == tmp_path for p in paths)
