"""`maskrcnn eval` applies the model's test-time settings given to it on top of the checkpoint's,
refuses those that cannot change after training, and says what differs."""

import json

import pytest
import torch

import maskrcnn
from maskrcnn.checkpoint import save_checkpoint
from maskrcnn.cli.main import main
from maskrcnn.config import COMMAND_LINE, ConfigError, load_config_origins
from maskrcnn.data.shapes import make_shapes
from maskrcnn.inference_settings import TEST_TIME, config_for_testing, flat_model_config
from maskrcnn.testing import tiny_model_config

NAMES = ("__background__", "circle", "square", "triangle")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny checkpoint of the shapes classes (20 detections per image at score 0), a
    shapes split of three images, and a config file with a data section only."""
    root = tmp_path_factory.mktemp("eval_settings")
    torch.manual_seed(0)
    save_checkpoint(root / "tiny.pt", maskrcnn.build_model(tiny_model_config(NAMES, (1, 2, 3))))
    shapes = make_shapes(root / "shapes", 1, 3)
    config = root / "eval.yaml"
    config.write_text(
        f"data:\n  val_json: {shapes['val_annotations']}\n  val_images: {shapes['val_images']}\n"
    )
    return root / "tiny.pt", config, shapes


def evaluate(setup, out, *extra):
    weights, config, _ = setup
    return main(
        ["eval", str(config), "--weights", str(weights), "--out", str(out), "--device", "cpu", *extra]
    )


def per_image(out) -> dict:
    counts = {}
    for entry in json.loads((out / "results.json").read_text()):
        counts[entry["image_id"]] = counts.get(entry["image_id"], 0) + 1
    return counts


def test_a_detection_cap_on_the_command_line_is_applied_and_said(setup, tmp_path, capsys):
    assert evaluate(setup, tmp_path / "plain") == 0
    assert set(per_image(tmp_path / "plain").values()) == {20}  # the checkpoint's cap
    assert "model.roi_heads" not in capsys.readouterr().out

    assert evaluate(setup, tmp_path / "capped", "model.roi_heads.detections_per_image=1") == 0
    assert set(per_image(tmp_path / "capped").values()) == {1}
    printed = capsys.readouterr().out
    assert "model.roi_heads.detections_per_image: 1 (the command line), not the checkpoint's 20" in printed


def test_the_test_scale_and_threshold_change_the_results(setup, tmp_path):
    assert evaluate(setup, tmp_path / "plain", "model.roi_heads.score_threshold=0") == 0
    scores = sorted(e["score"] for e in json.loads((tmp_path / "plain" / "results.json").read_text()))
    middle = scores[len(scores) // 2]
    assert evaluate(setup, tmp_path / "high", f"model.roi_heads.score_threshold={middle}") == 0
    high = json.loads((tmp_path / "high" / "results.json").read_text())
    assert high and all(e["score"] >= middle - 1e-6 for e in high) and len(high) < len(scores)
    assert evaluate(setup, tmp_path / "larger", "model.input.min_size=96", "model.input.max_size=128") == 0
    larger = json.loads((tmp_path / "larger" / "results.json").read_text())
    assert [e["bbox"] for e in larger] != [
        e["bbox"] for e in json.loads((tmp_path / "plain" / "results.json").read_text())
    ]


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "model.backbone.fpn_channels=32",
            "model.backbone.fpn_channels=32: {weights} was trained with 16, and the architecture",
        ),
        ("model.num_classes=5", "model.num_classes=5: {weights} was trained with 4"),
        ("model.rpn.batch_size_per_image=8", "model.rpn.batch_size_per_image=8: a setting of training alone"),
    ],
)
def test_what_cannot_change_after_training_is_refused_in_one_line(setup, tmp_path, capsys, override, message):
    assert evaluate(setup, tmp_path / "out", override) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.format(weights=setup[0]) in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_a_device_override_is_the_device_and_conflicts_are_refused(setup, tmp_path, capsys):
    weights, config, _ = setup
    base = ["eval", str(config), "--weights", str(weights), "--out", str(tmp_path / "out")]
    assert main([*base, "device=cpu"]) == 0
    assert main([*base, "--device", "cuda", "device=cpu"]) == 2
    assert "--device cuda and device=cpu (the command line): give one" in capsys.readouterr().err


def test_a_config_file_of_another_model_gives_none_of_its_model_section(setup, tmp_path, capsys):
    # configs/shapes.yaml describes a larger model (and sets a 208 px test scale): not this one's
    weights, _, shapes = setup
    arguments = ["eval", "configs/shapes.yaml", "--weights", str(weights), "--out", str(tmp_path / "out")]
    arguments += [
        "--json",
        str(shapes["val_annotations"]),
        "--images",
        str(shapes["val_images"]),
        "--device",
        "cpu",
    ]
    assert main(arguments) == 0
    printed = capsys.readouterr().out
    assert "configs/shapes.yaml: its model section describes another model than" in printed
    assert "model.input.min_size" not in printed  # the file's test scale is not applied


def test_a_config_file_of_the_same_model_gives_its_test_time_settings():
    checkpoint = tiny_model_config(NAMES)
    requested = tiny_model_config(NAMES)
    requested.input.min_size, requested.rpn.pre_nms_topk_train = 80, 7
    explicit = {"model.input.min_size": "my.yaml", "model.rpn.pre_nms_topk_train": "my.yaml"}
    tested, lines = config_for_testing(checkpoint, requested, explicit, "w.pt")
    assert tested.input.min_size == 80 and tested.rpn.pre_nms_topk_train == checkpoint.rpn.pre_nms_topk_train
    assert lines == ["model.input.min_size: 80 (my.yaml), not the checkpoint's 64"]
    # every test-time key names a setting of the model config
    assert TEST_TIME <= set(flat_model_config(checkpoint))
    config, origins = load_config_origins(None, ["model.input.min_size=70"])
    assert origins == {"model.input.min_size": COMMAND_LINE} and config.model.input.min_size == 70
    with pytest.raises(ConfigError, match="model.backbone.depth=101"):
        requested.backbone.depth = 101
        config_for_testing(checkpoint, requested, {"model.backbone.depth": COMMAND_LINE}, "w.pt")


def test_a_split_that_shares_no_category_with_the_model_is_refused(setup, tmp_path, capsys):
    weights, _, shapes = setup
    document = json.loads(shapes["val_annotations"].read_text())
    document["categories"] = [{"id": 7, "name": "cell"}]
    for annotation in document["annotations"]:
        annotation["category_id"] = 7
    other = tmp_path / "cells.json"
    other.write_text(json.dumps(document))
    split = ["--json", str(other), "--images", str(shapes["val_images"]), "--device", "cpu"]
    assert main(["eval", "shapes", "--weights", str(weights), *split, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    names = "1 circle, 2 square, 3 triangle"
    assert f"{weights} and {other} share no category: its ids are {names}, the file's 7 cell" in err
    # a results file of the model's categories, against that split: the same answer
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": 1, "category_id": 2, "bbox": [1, 1, 5, 5], "score": 0.9}]))
    assert (
        main(
            ["eval", "shapes", "--results", str(results), "--json", str(other), "--out", str(tmp_path / "b")]
        )
        == 2
    )
    assert "share no category: its ids are 2, the file's 7 cell" in capsys.readouterr().err


def swapped_names(shapes, tmp_path):
    """The split with the names of categories 1 and 2 swapped: the same ids, other classes (as
    two folders of labels converted one at a time may number them)."""
    document = json.loads(shapes["val_annotations"].read_text())
    names = {c["id"]: c["name"] for c in document["categories"]}
    names[1], names[2] = names[2], names[1]
    document["categories"] = [{"id": i, "name": name} for i, name in names.items()]
    other = tmp_path / "swapped.json"
    other.write_text(json.dumps(document))
    return other


def test_a_split_whose_ids_name_other_classes_is_refused_by_eval_and_by_training(setup, tmp_path, capsys):
    weights, _, shapes = setup
    other = swapped_names(shapes, tmp_path)
    split = ["--json", str(other), "--images", str(shapes["val_images"]), "--device", "cpu"]
    assert main(["eval", "shapes", "--weights", str(weights), *split, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{other}: its category ids name other classes than {weights}'s: " in err
    assert "id 1 is 'circle' there and 'square' here; id 2 is 'square' there and 'circle' here" in err
    assert not (tmp_path / "a" / "results.json").exists()
    # a training run with it as its validation split stops before its first step
    train = ["train", "shapes", "--train-json", str(shapes["train_annotations"])]
    train += ["--train-images", str(shapes["train_images"]), "--val-json", str(other)]
    train += ["--val-images", str(shapes["val_images"]), "--out", str(tmp_path / "run"), "--max-iter", "1"]
    assert main([*train, "device=cpu", "data.num_workers=0"]) == 2
    err = capsys.readouterr().err
    assert f"{other}: its category ids name other classes than {shapes['train_annotations']}'s" in err
    assert not (tmp_path / "run" / "model_final.pt").exists()


def test_a_split_without_images_is_refused(setup, tmp_path, capsys):
    weights, _, shapes = setup
    document = json.loads(shapes["val_annotations"].read_text())
    document["images"], document["annotations"] = [], []
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(document))
    split = ["--json", str(empty), "--images", str(shapes["val_images"]), "--device", "cpu"]
    assert main(["eval", "shapes", "--weights", str(weights), *split, "--out", str(tmp_path / "a")]) == 2
    assert f"{empty}: no image to score" in capsys.readouterr().err
