"""Keypoints on the command line: `make-shapes --keypoints`, `eval --oks-sigmas`, and a keypoint
model trained, evaluated and run by `train`, `eval` and `predict`."""

import json
import re
import shlex

import pytest

from maskrcnn import build_model
from maskrcnn.checkpoint import save_checkpoint
from maskrcnn.cli.main import main, parse_args
from maskrcnn.data.shapes import KEYPOINT_NAMES, SHAPES_OKS_SIGMAS, make_shapes
from maskrcnn.testing import tiny_model_config


def test_make_shapes_with_keypoints_writes_them_and_says_which_sigmas_score_them(tmp_path, capsys):
    out = tmp_path / "shapes"
    assert main(["make-shapes", str(out), "--train", "2", "--val", "1", "--seed", "3", "--keypoints"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"wrote the shapes dataset with keypoints (seed 3) in {out}:"
    data = json.loads((out / "annotations" / "instances_train.json").read_text())
    visible = sum(v == 2 for a in data["annotations"] for v in a["keypoints"][2::3])
    assert f"({visible} visible keypoint{'s' * (visible != 1)})" in printed[1]
    sigmas = re.search(r"model\.keypoint_head\.oks_sigmas=\[([0-9.,]+)\]", printed[-1]).group(1)
    assert tuple(float(s) for s in sigmas.split(",")) == SHAPES_OKS_SIGMAS
    assert f"--oks-sigmas {sigmas}" in printed[-1] and ", ".join(KEYPOINT_NAMES) in printed[-1]
    assert all(c["keypoints"] == list(KEYPOINT_NAMES) for c in data["categories"])
    # Rerun without --keypoints: the same folder then holds the plain dataset.
    assert main(["make-shapes", str(out), "--train", "2", "--val", "1", "--seed", "3"]) == 0
    data = json.loads((out / "annotations" / "instances_train.json").read_text())
    assert "keypoints" not in data["annotations"][0] and "keypoints" not in data["categories"][0]


def test_oks_sigmas_are_positive_numbers_separated_by_commas(capsys):
    args = parse_args(["eval", "shapes", "--weights", "model.pt", "--oks-sigmas", "0.05,0.1,1e-2"])
    assert args.oks_sigmas == (0.05, 0.1, 0.01)
    assert parse_args(["eval", "shapes", "--weights", "model.pt"]).oks_sigmas is None
    for bad in ("0,0.1", "0.1,,0.2", "a", "-1", "nan", "0.1;0.2"):
        assert main(["eval", "shapes", "--weights", "model.pt", "--oks-sigmas", bad]) == 2
        err = capsys.readouterr().err
        shown = shlex.quote(bad)  # as a shell would take it back
        assert err.endswith(
            f"error: --oks-sigmas {shown}: expected comma-separated numbers > 0, e.g. 0.05,0.05,0.1\n"
        )


def test_oks_sigmas_for_a_model_without_keypoints_are_an_error_naming_the_option(tmp_path, capsys):
    make_shapes(tmp_path / "shapes", 1, 1, seed=0)
    weights = tmp_path / "model.pt"
    names = ("__background__", "circle", "square", "triangle")
    save_checkpoint(weights, build_model(tiny_model_config(names, (1, 2, 3))))
    split = ["--json", str(tmp_path / "shapes" / "annotations" / "instances_val.json")]
    split += [
        "--images",
        str(tmp_path / "shapes" / "val"),
        "--out",
        str(tmp_path / "eval"),
        "--device",
        "cpu",
    ]
    assert main(["eval", "shapes", *split, "--weights", str(weights), "--oks-sigmas", "0.1"]) == 2
    assert capsys.readouterr().err == f"error: --oks-sigmas 0.1: {weights} predicts no keypoints\n"
    assert main(["eval", "shapes", *split, "--weights", str(weights)]) == 0  # and without: as it was
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "keypoints" not in metrics and "keypoint" not in capsys.readouterr().out


# The rest needs the keypoint head (modeling/keypoint_head.py) and its wiring in build_model.
SMALL_MODEL = [
    "model.backbone.stage_channels=[32,64,128,256]",
    "model.backbone.fpn_channels=16",
    "model.roi_heads.fc_dim=64",
    "model.roi_heads.mask_conv_dim=16",
    "model.roi_heads.score_threshold=0.0",
    "model.roi_heads.detections_per_image=10",
    "model.rpn.post_nms_topk_test=50",
    "model.input.min_size=128",
    "model.input.max_size=176",
    "model.keypoints=true",
    "model.keypoint_head.num_keypoints=4",
    "model.keypoint_head.oks_sigmas=[0.05,0.05,0.05,0.05]",
    "model.keypoint_head.conv_dim=16",
    "model.keypoint_head.num_convs=1",
]


@pytest.fixture(scope="module")
def keypoint_run(tmp_path_factory):
    """(the shapes dataset with keypoints, a run folder of a keypoint model trained one step)."""
    root = tmp_path_factory.mktemp("keypoints")
    shapes, run = root / "shapes", root / "run"
    make_shapes(shapes, 3, 2, seed=1, keypoints=True)
    args = ["train", "shapes", "--train-json", str(shapes / "annotations" / "instances_train.json")]
    args += [
        "--train-images",
        str(shapes / "train"),
        "--val-json",
        str(shapes / "annotations" / "instances_val.json"),
    ]
    args += ["--val-images", str(shapes / "val"), "--out", str(run), "--max-iter", "1"]
    args += ["data.num_workers=0", "data.images_per_batch=2", "data.min_sizes_train=[128]"]
    args += ["data.max_size_train=176", "device=cpu", *SMALL_MODEL]
    assert main(args) == 0
    return shapes, run


def test_training_fills_the_keypoints_from_the_data_and_records_keypoint_ap(keypoint_run):
    from maskrcnn.interop.load import load_model

    _, run = keypoint_run
    model = load_model(run / "model_final.pt", device="cpu")
    head = model.config.keypoint_head
    assert head.names == KEYPOINT_NAMES and head.skeleton == ((1, 2), (2, 3), (3, 4), (4, 1))
    assert head.num_keypoints == 4 and head.oks_sigmas == SHAPES_OKS_SIGMAS
    final = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert {"keypoints_AP", "keypoints_AP50", "keypoints_AP75", "keypoints_APm", "keypoints_APl"} <= set(
        final
    )
    assert "keypoints_APs" not in final and "segm_AP" in final
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["keypoints"]["AP"] == final["keypoints_AP"]
    assert set(metrics["per_class"]["keypoints"]) == {"circle", "square", "triangle"}


def test_eval_and_predict_of_a_keypoint_model_score_draw_and_write_keypoints(keypoint_run, tmp_path, capsys):
    shapes, run = keypoint_run
    weights = str(run / "model_final.pt")
    split = ["--json", str(shapes / "annotations" / "instances_val.json"), "--images", str(shapes / "val")]
    out = tmp_path / "eval"
    assert main(["eval", "shapes", *split, "--weights", weights, "--out", str(out), "--vis", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| keypoint " in printed and "keypoint AP" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    results = json.loads((out / "results.json").read_text())
    assert results and all(len(r["keypoints"]) == 12 and r["keypoints"][2::3] == [1] * 4 for r in results)
    assert (out / "vis" / "000000.png").stat().st_size > 0
    # The saved detections score the same as the model, given the sigmas the checkpoint held.
    again, saved = tmp_path / "again", ["--results", str(out / "results.json")]
    assert main(["eval", "shapes", *split, *saved, "--out", str(again)]) == 2
    assert "COCO's person sigmas are for 17 keypoints, not 4" in capsys.readouterr().err
    assert (
        main(["eval", "shapes", *split, *saved, "--out", str(again), "--oks-sigmas", "0.05,0.05,0.05,0.05"])
        == 0
    )
    rescored = json.loads((again / "metrics.json").read_text())
    assert rescored["keypoints"] == metrics["keypoints"]
    assert (
        main(["eval", "shapes", *split, "--weights", weights, "--out", str(out), "--oks-sigmas", "0.1,0.1"])
        == 2
    )
    assert capsys.readouterr().err.endswith(
        "error: --oks-sigmas 0.1,0.1: 2 sigmas for the 4 keypoints; give one per keypoint\n"
    )

    predictions = tmp_path / "predict"
    image = shapes / "val" / "000000.png"
    assert (
        main(
            ["predict", str(image), "--weights", weights, "--out", str(predictions), "--score-threshold", "0"]
        )
        == 0
    )
    entries = json.loads((predictions / "predictions.json").read_text())
    assert entries and all(len(e["keypoints"]) == 12 and len(e["keypoint_scores"]) == 4 for e in entries)
    assert (predictions / "000000.png").stat().st_size > 0
