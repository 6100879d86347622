"""End-to-end tests of `maskrcnn predict` on a tiny randomly initialised model."""

import json
import subprocess
import sys

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
import torchvision
from PIL import Image

import maskrcnn
from maskrcnn.checkpoint import save_checkpoint
from maskrcnn.cli.main import main
from maskrcnn.config import InputConfig, ModelConfig, RoIHeadsConfig

SIZES = {"first.png": (64, 48), "second.png": (40, 72)}  # name -> (width, height)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = ModelConfig(
        num_classes=3,
        class_names=("__background__", "a", "b"),
        input=InputConfig(min_size=64, max_size=96),
        # Random weights score every class about equally: a zero threshold still yields detections,
        # and capping them keeps the mask head (the slow part on CPU) quick.
        roi_heads=RoIHeadsConfig(score_threshold=0.0, detections_per_image=10),
    )
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.manual_seed(0)  # the same weights whatever ran before
    save_checkpoint(path, maskrcnn.build_model(config))
    return path


def write_images(folder, names=SIZES):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        width, height = SIZES[name]
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / name)
    return folder


def test_predict_folder_with_a_corrupt_image(tmp_path, checkpoint, capsys):
    folder = write_images(tmp_path / "images")
    (folder / "broken.png").write_bytes(b"\x00 definitely not a png \xff" * 10)
    (folder / "notes.txt").write_text("not an image, not scanned")
    out = tmp_path / "out"

    code = main(
        ["predict", str(folder), "--weights", str(checkpoint), "--out", str(out), "--score-threshold", "0"]
    )

    captured = capsys.readouterr()
    assert code == 1
    error_lines = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and str(folder / "broken.png") in error_lines[0]
    assert "Traceback" not in captured.err
    for name, size in SIZES.items():
        assert Image.open(out / name).size == size
        assert f"{folder / name}: " in captured.out
    images = json.loads((out / "images.json").read_text())
    predictions = json.loads((out / "predictions.json").read_text())
    assert {(i["file_name"], i["width"], i["height"]) for i in images} == {
        (str(folder / n), w, h) for n, (w, h) in SIZES.items()
    }
    ids = {i["id"]: i["file_name"] for i in images}
    assert predictions and all(p["image_id"] in ids for p in predictions)
    assert all(ids[p["image_id"]] == p["file_name"] for p in predictions)
    assert all(p["category_id"] in (1, 2) and "counts" in p["segmentation"] for p in predictions)
    assert f"{len(predictions)} detections in 2 of 3 images" in captured.out


def test_predict_applies_its_threshold_and_writes_polygons_of_the_masks(
    tmp_path, trained_shapes_weights, trained_shapes_images, capsys
):
    images = sorted(trained_shapes_images.glob("*.png"))[:3]
    args = ["predict", *map(str, images), "--weights", str(trained_shapes_weights), "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "all"), "--score-threshold", "0"]) == 0
    everything = json.loads((tmp_path / "all" / "predictions.json").read_text())
    scores = sorted({p["score"] for p in everything})
    assert len(scores) >= 4, "the trained model detects shapes: something to threshold"
    threshold = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2  # between two scores

    code = main([*args, "--out", str(tmp_path / "out"), "--score-threshold", str(threshold), "--polygons"])

    assert code == 0, capsys.readouterr().err
    kept = json.loads((tmp_path / "out" / "predictions.json").read_text())
    expected = [p for p in everything if p["score"] >= threshold]
    assert 0 < len(kept) == len(expected) < len(everything)
    key = lambda p: (p["image_id"], p["score"])  # noqa: E731
    for polygon_entry, rle_entry in zip(sorted(kept, key=key), sorted(expected, key=key)):
        assert (
            polygon_entry["bbox"] == rle_entry["bbox"]
            and polygon_entry["category_id"] == rle_entry["category_id"]
        )
        polygons = polygon_entry["segmentation"]
        assert isinstance(polygons, list) and polygons and all(len(p) >= 6 for p in polygons)
        # the polygons draw the mask's pixels (its holes filled, as COCO polygons must)
        height, width = rle_entry["segmentation"]["size"]
        drawn = mask_util.decode(mask_util.merge(mask_util.frPyObjects(polygons, height, width))).astype(bool)
        mask = mask_util.decode(
            dict(rle_entry["segmentation"], counts=rle_entry["segmentation"]["counts"].encode())
        )
        assert (drawn & ~mask.astype(bool)).sum() <= 0.02 * drawn.sum()  # only filled holes added
        assert (mask.astype(bool) & ~drawn).sum() == 0
    assert [i["id"] for i in json.loads((tmp_path / "out" / "images.json").read_text())] == [1, 2, 3]


@pytest.mark.parametrize("content", [None, b"garbage bytes, not a checkpoint"], ids=["missing", "garbage"])
def test_bad_weights_exit_2_naming_the_file(tmp_path, capsys, content):
    folder = write_images(tmp_path / "images")
    weights = tmp_path / "weights.pt"
    if content is not None:
        weights.write_bytes(content)

    code = main(["predict", str(folder), "--weights", str(weights), "--out", str(tmp_path / "out")])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and str(weights) in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_torchvision_state_dict_is_accepted(tmp_path, capsys):
    torch.manual_seed(0)
    model = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=64, max_size=96
    )
    weights = tmp_path / "torchvision.pth"
    torch.save(model.state_dict(), weights)
    folder = write_images(tmp_path / "images", names=["first.png"])

    code = main(
        ["predict", str(folder / "first.png"), "--weights", str(weights), "--out", str(tmp_path / "out")]
    )

    assert code == 0, capsys.readouterr().err
    assert Image.open(tmp_path / "out" / "first.png").size == SIZES["first.png"]


def test_overlay_must_not_overwrite_an_input(tmp_path, checkpoint, capsys):
    folder = write_images(tmp_path / "images")

    code = main(["predict", str(folder), "--weights", str(checkpoint), "--out", str(folder)])

    assert code == 2 and "overwrite" in capsys.readouterr().err


def test_usage_errors_return_2(capsys):
    assert main(["predict", "x.png", "--weights", "w.pt", "--out", "o", "--score-threshold", "2"]) == 2
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli(tmp_path):
    missing = tmp_path / "missing.pt"
    command = [
        sys.executable,
        "-m",
        "maskrcnn",
        "predict",
        str(write_images(tmp_path / "images")),  # the command line checks that the inputs exist first
        "--weights",
        str(missing),
        "--out",
        str(tmp_path),
    ]

    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)

    assert completed.returncode == 2
    assert completed.stderr.strip() == f"error: --weights {missing}: weights file not found"


def test_predict_in_bfloat16_writes_the_same_kind_of_results(tmp_path, checkpoint, capsys):
    folder = write_images(tmp_path / "images", names=["first.png"])
    outputs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        args = ["predict", str(folder / "first.png"), "--weights", str(checkpoint), "--out", str(out)]
        assert main([*args, "--score-threshold", "0", "--precision", precision]) == 0
        outputs[precision] = json.loads((out / "predictions.json").read_text())
    assert len(outputs["bf16"]) == len(outputs["fp32"]) > 0
    assert all(isinstance(p["segmentation"]["counts"], str) for p in outputs["bf16"])
    best = {precision: max(p["score"] for p in found) for precision, found in outputs.items()}
    assert abs(best["bf16"] - best["fp32"]) < 0.05
    args = ["predict", str(folder), "--weights", str(checkpoint), "--out", str(tmp_path)]
    assert main([*args, "--precision", "fp8"]) == 2
    assert "--precision" in capsys.readouterr().err
