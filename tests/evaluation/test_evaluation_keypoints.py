"""Keypoint AP: pycocotools' COCOeval "keypoints" with the sigmas given, on the cleaned ground
truth, beside box and mask AP; evaluation without sigmas stays what it was."""

import contextlib
import io
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from maskrcnn.cli.evaluate import evaluate_command
from maskrcnn.data.coco import CocoDataset
from maskrcnn.evaluation.coco import (
    KEYPOINT_SUMMARY_NAMES,
    coco_ground_truth,
    evaluate_results,
)
from maskrcnn.evaluation.reports import format_metrics

HEIGHT, WIDTH = 64, 80
NAMES = ["head", "left_hand", "right_hand"]
SIGMAS = (0.05, 0.08, 0.08)
# (image id, x0, y0, x1, y1, category, keypoints): people (category 5) and a ball (category 9)
OBJECTS = [
    (1, 5, 5, 35, 45, 5, [20, 8, 2, 8, 30, 2, 32, 30, 1]),
    (1, 40, 10, 75, 60, 5, [57, 14, 2, 44, 35, 0, 0, 0, 0]),
    (1, 60, 2, 70, 8, 9, None),
    (2, 10, 20, 50, 62, 5, [30, 24, 2, 14, 45, 2, 46, 45, 2]),
    (2, 55, 40, 70, 55, 5, [0] * 9),  # a person without labelled keypoints: COCOeval ignores it
]


@pytest.fixture()
def split(tmp_path):
    """A keypoint split that pycocotools reads as it is: (its file, its annotations)."""
    images = [{"id": i, "file_name": f"{i}.png", "height": HEIGHT, "width": WIDTH} for i in (1, 2)]
    annotations = []
    for image_id, x0, y0, x1, y1, category, keypoints in OBJECTS:
        mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        mask[y0:y1, x0:x1] = 1
        rle = mask_util.encode(np.asfortranarray(mask))
        rle["counts"] = rle["counts"].decode()
        annotation = {
            "id": len(annotations) + 1,
            "image_id": image_id,
            "category_id": category,
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "area": int(mask.sum()),
            "segmentation": rle,
            "iscrowd": 0,
        }
        if keypoints is not None:
            annotation["keypoints"] = keypoints
            annotation["num_keypoints"] = sum(v > 0 for v in keypoints[2::3])
        annotations.append(annotation)
    categories = [
        {"id": 5, "name": "person", "keypoints": NAMES, "skeleton": [[1, 2], [1, 3]]},
        {"id": 9, "name": "ball"},
    ]
    path = tmp_path / "person_keypoints.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path, annotations


def as_results(annotations, shift=0.0, score=0.9) -> list[dict]:
    """The annotations as detections, people's keypoints moved `shift` pixels right (v = 1)."""
    results = []
    for a in annotations:
        entry = {k: a[k] for k in ("image_id", "category_id", "bbox", "segmentation")} | {"score": score}
        if "keypoints" in a:
            points = np.reshape(a["keypoints"], (-1, 3)).astype(float)
            points[:, 0] += shift
            points[:, 2] = 1
            entry["keypoints"] = points.ravel().tolist()
        results.append(entry)
    return results


def reference_keypoint_stats(path, results) -> list[float]:
    """pycocotools on the file itself, with COCO's keypoint results format (no bbox)."""
    entries = [
        {k: r[k] for k in ("image_id", "category_id", "keypoints", "score")}
        for r in results
        if "keypoints" in r
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
        evaluation = COCOeval(coco, coco.loadRes(entries), "keypoints")
        evaluation.params.kpt_oks_sigmas = np.array(SIGMAS)
        evaluation.params.catIds = [5]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return [float(s) for s in evaluation.stats[:5]]


def test_perfect_keypoints_score_one_beside_box_and_mask_ap(split):
    path, annotations = split
    metrics, evaluations = evaluate_results(path, as_results(annotations), oks_sigmas=SIGMAS)
    assert set(metrics["keypoints"]) == set(KEYPOINT_SUMMARY_NAMES)
    assert metrics["keypoints"]["AP"] == pytest.approx(1.0)
    assert set(metrics["per_class"]["keypoints"]) == {"person"}  # the ball has no keypoints
    assert metrics["per_class"]["keypoints"]["person"]["AP"] == pytest.approx(1.0)
    assert set(metrics["per_class"]["keypoints"]["person"]) == set(KEYPOINT_SUMMARY_NAMES)
    assert metrics["bbox"]["AP"] == pytest.approx(1.0) and metrics["segm"]["AP"] == pytest.approx(1.0)
    assert set(evaluations) == {"bbox", "segm", "keypoints"}


@pytest.mark.parametrize("shift", [1.5, 3.0])
def test_keypoint_ap_is_exactly_pycocotools_on_the_file(split, shift):
    path, annotations = split
    results = as_results(annotations, shift)
    # A false positive, and a second, worse detection of the first person.
    results.append({**results[0], "score": 0.95, "keypoints": [v + 9 for v in results[0]["keypoints"]]})
    results.append({**results[3], "score": 0.3, "image_id": 1})
    metrics, _ = evaluate_results(path, results, oks_sigmas=SIGMAS)
    reference = reference_keypoint_stats(path, results)
    ours = [metrics["keypoints"][name] for name in KEYPOINT_SUMMARY_NAMES]
    for a, b in zip(ours, reference):
        assert (np.isnan(a) and b < 0) or a == b
    assert 0 < metrics["keypoints"]["AP"] < 1  # the shift and the false positive cost something


def test_a_larger_shift_scores_lower_and_wider_sigmas_forgive_it(split):
    path, annotations = split
    results = as_results(annotations, shift=3.0)
    narrow = evaluate_results(path, results, oks_sigmas=SIGMAS)[0]["keypoints"]["AP"]
    wide = evaluate_results(path, results, oks_sigmas=tuple(4 * s for s in SIGMAS))[0]["keypoints"]["AP"]
    near = evaluate_results(path, as_results(annotations, 1.0), oks_sigmas=SIGMAS)[0]["keypoints"]["AP"]
    assert narrow < near and narrow < wide


def test_without_sigmas_the_metrics_are_box_and_mask_only(split):
    path, annotations = split
    dataset = CocoDataset(path, "")
    metrics, evaluations = evaluate_results(dataset, as_results(annotations))
    assert (
        "keypoints" not in metrics
        and "keypoints" not in metrics["per_class"]
        and set(evaluations)
        == {
            "bbox",
            "segm",
        }
    )
    assert "keypoint" not in format_metrics(metrics)


def test_ground_truth_carries_keypoints_and_their_count(split):
    path, _ = split
    coco = coco_ground_truth(CocoDataset(path, "", keypoints=True))
    people = coco.loadAnns(coco.getAnnIds(catIds=[5]))
    assert [a["num_keypoints"] for a in people] == [3, 1, 3, 0]
    assert people[1]["keypoints"] == [57, 14, 2, 0, 0, 0, 0, 0, 0]  # unlabelled: zeros
    (ball,) = coco.loadAnns(coco.getAnnIds(catIds=[9]))
    assert ball["keypoints"] == [0] * 9 and ball["num_keypoints"] == 0
    assert coco.loadCats(5)[0]["keypoints"] == NAMES and "keypoints" not in coco.loadCats(9)[0]


def test_format_metrics_prints_keypoint_ap_beside_box_and_mask(split):
    path, annotations = split
    metrics, _ = evaluate_results(path, as_results(annotations, 3.0), oks_sigmas=SIGMAS)
    text = format_metrics(metrics)
    (row,) = [line for line in text.splitlines() if line.startswith("| keypoint |")]
    cells = [c.strip() for c in row.strip("|").split("|")][1:]
    expected = [f"{100 * metrics['keypoints'][n]:.1f}" for n in ("AP", "AP50", "AP75")]
    assert cells[:3] == expected and cells[3] == "n/a"  # no small objects in keypoint AP
    assert "keypoint AP" in text and "| ball " in text


@pytest.mark.parametrize(
    "change, problem",
    [
        (
            lambda r: {**r, "keypoints": r["keypoints"][:6]} if "keypoints" in r else r,
            "6 keypoint values, not 3 x 3",
        ),
        (lambda r: r, "2 OKS sigmas for the ground truth's 3 keypoints"),
    ],
)
def test_keypoint_results_that_cannot_be_scored_are_value_errors(split, change, problem):
    path, annotations = split
    results = [change(r) for r in as_results(annotations)]
    sigmas = SIGMAS if "sigmas" not in problem else SIGMAS[:2]
    with pytest.raises(ValueError, match=problem):
        evaluate_results(path, results, oks_sigmas=sigmas)


def test_a_ground_truth_without_keypoints_cannot_score_them(split):
    path, annotations = split
    with pytest.raises(ValueError, match="no category with keypoints"):
        evaluate_results(CocoDataset(path, ""), as_results(annotations), oks_sigmas=SIGMAS)


def score(path, results_file, out, sigmas) -> int:
    """`maskrcnn eval --results` as the command line runs it, without a config."""
    return evaluate_command(
        None, None, str(path), results_file=str(results_file), out_dir=str(out), oks_sigmas=sigmas
    )


def test_eval_of_a_results_file_scores_and_writes_keypoint_ap(split, tmp_path, capsys):
    path, annotations = split
    results, out = tmp_path / "results.json", tmp_path / "eval"
    results.write_text(json.dumps(as_results(annotations, 1.5)))
    assert score(path, results, out, SIGMAS) == 0
    printed = capsys.readouterr().out
    written = json.loads((out / "metrics.json").read_text())["keypoints"]
    expected = reference_keypoint_stats(path, as_results(annotations, 1.5))
    assert [written[n] for n in KEYPOINT_SUMMARY_NAMES] == [None if e < 0 else e for e in expected]
    (row,) = [line for line in printed.splitlines() if line.startswith("| keypoint |")]
    assert f"{100 * written['AP']:5.1f}" in row

    # The wrong number of sigmas, or sigmas for results without keypoints: one line naming the option.
    assert score(path, results, out, (0.1, 0.1)) == 2
    expected = "error: --oks-sigmas 0.1,0.1: 2 sigmas for the 3 keypoints; give one per keypoint\n"
    assert capsys.readouterr().err == expected
    plain = tmp_path / "plain.json"
    plain.write_text(
        json.dumps([{k: v for k, v in r.items() if k != "keypoints"} for r in as_results(annotations)])
    )
    assert score(path, plain, out, SIGMAS) == 2
    assert capsys.readouterr().err == "error: --oks-sigmas 0.05,0.08,0.08: the results have no keypoints\n"


def test_eval_of_results_with_keypoints_of_another_count_names_the_entry(split, tmp_path, capsys):
    path, annotations = split
    results = as_results(annotations)
    results[1]["keypoints"] = results[1]["keypoints"] + [1, 1, 1]
    file = tmp_path / "results.json"
    file.write_text(json.dumps(results))
    assert (
        evaluate_command(
            None, None, str(path), results_file=str(file), out_dir=str(tmp_path), oks_sigmas=SIGMAS
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith(f"error: {file}: entry 1 has keypoints ") and "of the split's 3 keypoints" in err


def test_eval_of_17_keypoint_results_defaults_to_the_coco_person_sigmas(tmp_path, capsys):
    from maskrcnn.data.coco_names import COCO_PERSON_KEYPOINTS
    from maskrcnn.evaluation.keypoints import COCO_PERSON_OKS_SIGMAS

    keypoints = [v for k in range(17) for v in (10 + 3 * k, 10 + 2 * k, 2)]
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[5:60, 5:70] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode()
    annotation = {"id": 1, "image_id": 1, "category_id": 1, "segmentation": rle, "bbox": [5, 5, 65, 55]}
    annotation |= {"area": int(mask.sum()), "iscrowd": 0, "keypoints": keypoints, "num_keypoints": 17}
    images = [{"id": 1, "file_name": "1.png", "height": HEIGHT, "width": WIDTH}]
    categories = [{"id": 1, "name": "person", "keypoints": list(COCO_PERSON_KEYPOINTS)}]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": [annotation], "categories": categories}))
    moved = [v + (2 if i % 3 == 0 else 0) for i, v in enumerate(keypoints)]
    results = [{"image_id": 1, "category_id": 1, "bbox": [5, 5, 65, 55], "score": 0.8, "keypoints": moved}]
    file = tmp_path / "results.json"
    file.write_text(json.dumps(results))
    assert evaluate_command(None, None, str(path), results_file=str(file), out_dir=str(tmp_path / "e")) == 0
    written = json.loads((tmp_path / "e" / "metrics.json").read_text())["keypoints"]
    entry = {k: results[0][k] for k in ("image_id", "category_id", "keypoints", "score")}
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
        evaluation = COCOeval(coco, coco.loadRes([entry]), "keypoints")  # its own default sigmas
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    np.testing.assert_allclose(evaluation.params.kpt_oks_sigmas, COCO_PERSON_OKS_SIGMAS)
    assert [written[n] for n in KEYPOINT_SUMMARY_NAMES[:3]] == list(evaluation.stats[:3])
    assert 0 < written["AP"] < 1
