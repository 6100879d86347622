"""What the commands leave in their output folders: one run's outputs and nothing stale, the
user's own files untouched, strict JSON, and a file where a folder should be refused unchanged."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import maskrcnn
from maskrcnn.checkpoint import save_checkpoint
from maskrcnn.cli.main import main
from maskrcnn.data.shapes import make_shapes
from maskrcnn.modeling.mask_rcnn import MaskRCNN
from maskrcnn.testing import tiny_model_config

CONFIG = "configs/shapes.yaml"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny checkpoint of the shapes classes and a shapes dataset with two validation images."""
    root = tmp_path_factory.mktemp("outputs")
    torch.manual_seed(0)
    names = ("__background__", "circle", "square", "triangle")
    save_checkpoint(root / "tiny.pt", maskrcnn.build_model(tiny_model_config(names, (1, 2, 3))))
    return root / "tiny.pt", make_shapes(root / "shapes", 1, 2)


def strict(path):
    """The file's JSON, refusing NaN and Infinity, which strict readers do not accept."""

    def refuse(constant):
        raise AssertionError(f"{path.name} holds {constant}: not strict JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def run_eval(weights, shapes, out, *extra) -> int:
    split = ["--json", str(shapes["val_annotations"]), "--images", str(shapes["val_images"])]
    return main(
        ["eval", CONFIG, *split, "--out", str(out), "--device", "cpu", *extra, "--weights", str(weights)]
    )


def test_eval_replaces_its_own_outputs_and_keeps_the_users(setup, tmp_path, capsys):
    weights, shapes = setup
    out = tmp_path / "eval"
    stems = sorted(p.stem for p in shapes["val_images"].glob("*.png"))
    assert run_eval(weights, shapes, out, "--vis", "2") == 0
    assert sorted(p.stem for p in (out / "vis").glob("*.png")) == stems
    (out / "notes.txt").write_text("mine")
    (out / "vis" / "sketch.png").write_bytes(b"mine too")

    assert run_eval(weights, shapes, out, "--vis", "1") == 0
    assert sorted(p.name for p in (out / "vis").iterdir()) == [f"{stems[0]}.png", "sketch.png"]
    assert "removed 1 file of the earlier eval" in capsys.readouterr().out

    # Scoring the saved detections: results.json is this run's input and stays; vis/ is stale.
    saved = (out / "results.json").read_text()
    split = ["--json", str(shapes["val_annotations"])]
    assert main(["eval", CONFIG, *split, "--results", str(out / "results.json"), "--out", str(out)]) == 0
    assert (out / "results.json").read_text() == saved
    assert sorted(p.name for p in (out / "vis").iterdir()) == ["sketch.png"]
    assert sorted(p.name for p in out.iterdir()) == [
        "confusion_matrix.json",
        "confusion_matrix.png",
        "eval_files.json",
        "metrics.json",
        "notes.txt",
        "precision_recall.png",
        "results.json",
        "vis",
    ]


def test_predict_replaces_its_own_outputs_and_keeps_the_users(setup, tmp_path, capsys):
    weights, shapes = setup
    first, second = sorted(shapes["val_images"].glob("*.png"))
    out = tmp_path / "predictions"
    # threshold 0: the tiny model's random scores are all low, and every image has detections
    base = ["--weights", str(weights), "--out", str(out), "--device", "cpu", "--score-threshold", "0"]
    assert main(["predict", str(first), str(second), *base]) == 0
    assert {p["file_name"] for p in strict(out / "predictions.json")} == {str(first), str(second)}
    out.joinpath("photo.png").write_bytes(b"the user's own picture")

    assert main(["predict", str(second), *base]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == sorted(["photo.png", second.name])
    images = strict(out / "images.json")
    assert [image["file_name"] for image in images] == [str(second)]
    assert {p["file_name"] for p in strict(out / "predictions.json")} == {str(second)}
    assert "removed 1 file of the earlier run" in capsys.readouterr().out


def test_json_outputs_are_strict_even_with_nan(setup, tmp_path, monkeypatch):
    weights, shapes = setup
    original = MaskRCNN.predict

    def predict_with_a_nan_score(self, *args, **kwargs):
        results = original(self, *args, **kwargs)
        for result in results:
            result["scores"] = result["scores"].clone()
            result["scores"][:1] = float("nan")
        return results

    monkeypatch.setattr(MaskRCNN, "predict", predict_with_a_nan_score)
    out = tmp_path / "predictions"
    image = str(next(shapes["val_images"].glob("*.png")))
    assert (
        main(["predict", image, "--weights", str(weights), "--out", str(out), "--score-threshold", "0"]) == 0
    )
    predictions = strict(out / "predictions.json")
    assert predictions and predictions[0]["score"] is None

    monkeypatch.setattr(MaskRCNN, "predict", original)
    # A category without a single object has no AP (NaN in Python): strict JSON writes null.
    split = json.loads(shapes["val_annotations"].read_text())
    split["categories"].append({"id": 4, "name": "hexagon"})
    (tmp_path / "val.json").write_text(json.dumps(split))
    assert run_eval(weights, {**shapes, "val_annotations": tmp_path / "val.json"}, tmp_path / "eval") == 0
    metrics = strict(tmp_path / "eval" / "metrics.json")
    strict(tmp_path / "eval" / "results.json")
    for kind in ("bbox", "segm"):
        assert set(metrics["per_class"][kind]["hexagon"].values()) == {None}
    assert all(value is None or math.isfinite(value) for value in metrics["bbox"].values())


@pytest.mark.parametrize("command", ["predict", "eval", "train", "export", "make-shapes"])
def test_an_output_path_that_is_a_file_is_refused_and_left_as_it_was(setup, tmp_path, capsys, command):
    weights, shapes = setup
    target = tmp_path / "taken"
    target.write_bytes(b"a file the user cares about")
    folder_of_target = tmp_path / "taken_dir"
    folder_of_target.mkdir()
    image = str(next(shapes["val_images"].glob("*.png")))
    argv = {
        "predict": ["predict", image, "--weights", str(weights), "--out", str(target)],
        "eval": ["eval", CONFIG, "--weights", str(weights), "--json", str(shapes["val_annotations"])]
        + ["--images", str(shapes["val_images"]), "--out", str(target)],
        "train": ["train", CONFIG, "--train-json", str(shapes["train_annotations"])]
        + ["--train-images", str(shapes["train_images"]), "--out", str(target)],
        "export": ["export", str(folder_of_target), "--weights", str(weights)],
        "make-shapes": ["make-shapes", str(target), "--train", "1", "--val", "1"],
    }[command]
    option = {"export": "OUT.onnx", "make-shapes": "OUT"}.get(command, "--out")

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: {option} {argv[argv.index(option) + 1] if option == '--out' else argv[1]}: "
    )
    assert len(err.splitlines()) == 1
    assert target.read_bytes() == b"a file the user cares about"
    assert list(folder_of_target.iterdir()) == []


def test_make_shapes_lists_what_it_wrote_and_a_smaller_rerun_leaves_no_stray_images(tmp_path, capsys):
    out = tmp_path / "shapes"
    assert main(["make-shapes", str(out), "--train", "3", "--val", "1", "--seed", "2"]) == 0
    printed = capsys.readouterr().out.splitlines()
    train = json.loads((out / "annotations" / "instances_train.json").read_text())
    val = json.loads((out / "annotations" / "instances_val.json").read_text())
    assert printed[0] == f"wrote the shapes dataset (seed 2) in {out}:"
    listed = {line.split()[0]: " ".join(line.split()[1:]) for line in printed[1:]}
    count = len(train["annotations"])
    assert listed == {
        str(
            out / "annotations" / "instances_train.json"
        ): f"training annotations: 3 images, {count} instances",
        f"{out / 'train'}/": "3 images (training, PNG)",
        str(out / "annotations" / "instances_val.json"): "validation annotations: 1 image, "
        + f"{len(val['annotations'])} instance{'s' * (len(val['annotations']) != 1)}",
        f"{out / 'val'}/": "1 image (validation, PNG)",
    }
    (out / "train" / "mine.png").write_bytes(b"not a shapes image")

    assert main(["make-shapes", str(out), "--train", "1", "--val", "1"]) == 0
    assert sorted(p.name for p in (out / "train").iterdir()) == ["000000.png", "mine.png"]
    assert "1 image (training, PNG)" in capsys.readouterr().out
    with Image.open(out / "train" / "000000.png") as picture:
        assert np.asarray(picture).shape == (192, 256, 3)


def test_predict_stopped_by_sigterm_writes_what_it_predicted_and_says_so(
    setup, tmp_path, monkeypatch, capsys
):
    import os
    import signal

    weights, shapes = setup
    folder = tmp_path / "images"
    folder.mkdir()
    source = next(shapes["val_images"].glob("*.png"))
    for name in ("a.png", "b.png", "c.png"):
        folder.joinpath(name).write_bytes(source.read_bytes())
    original, calls = MaskRCNN.predict, []

    def stopped_on_the_second(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # a job scheduler's SIGTERM while the second image is predicted
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MaskRCNN, "predict", stopped_on_the_second)
    out = tmp_path / "out"
    code = main(
        ["predict", str(folder), "--weights", str(weights), "--out", str(out), "--score-threshold", "0"]
    )
    assert code == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert f"stopped by SIGTERM: predictions.json and images.json in {out} hold the 1 of 3 images done" in err
    images = strict(out / "images.json")
    assert [image["file_name"] for image in images] == [str(folder / "a.png")]
    predictions = strict(out / "predictions.json")
    assert predictions and {p["file_name"] for p in predictions} == {str(folder / "a.png")}
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png"]  # its overlay, and no other
