"""ONNX export: the exported graph, run by ONNX Runtime, gives the eager model's detections."""

import re
from dataclasses import replace

import numpy as np
import pytest
import tifffile
import torch

from maskrcnn import ModelConfig, build_model
from maskrcnn.checkpoint import save_checkpoint
from maskrcnn.cli.main import main
from maskrcnn.config import BackboneConfig, InputConfig, RoIHeadsConfig
from maskrcnn.export.onnx import (
    compare_with_eager,
    export_intensity,
    export_onnx,
    onnx_session,
    run_onnx,
    with_export_intensity,
)
from maskrcnn.interop.load import load_model


def tiny_config(**roi_heads) -> ModelConfig:
    """A narrow trunk (exports in a second or two) with frozen norms, as pre-trained models have."""
    return ModelConfig(
        num_classes=4,
        backbone=BackboneConfig(
            stage_blocks=(1, 1, 1, 1),
            stage_channels=(64, 128, 256, 512),
            stem_channels=32,
            width_per_group=16,
            fpn_channels=64,
        ),
        input=InputConfig(min_size=64, max_size=96),
        roi_heads=RoIHeadsConfig(
            **{"score_threshold": 0.0, "fc_dim": 128, "mask_conv_dim": 32, "mask_num_convs": 2, **roi_heads}
        ),
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(tiny_config()).eval()
    # every detection (random weights score about 1 / num_classes): compared one by one below
    path = export_onnx(
        model, tmp_path_factory.mktemp("onnx") / "model.onnx", example_size=(48, 64), score_threshold=0.0
    )
    return model, onnx_session(path)


@pytest.mark.parametrize("size", [(48, 64), (70, 50), (100, 130), (33, 200)])
def test_onnx_runtime_matches_eager_at_sizes_other_than_the_traced_one(exported, size):
    model, session = exported
    image = torch.rand(3, *size, generator=torch.Generator().manual_seed(size[0] + size[1]))
    check = compare_with_eager(model, session, image, score_threshold=0.0)
    assert check.detections > 10
    assert check.same_count and check.same_labels
    assert check.max_box_difference <= 1e-3
    assert check.max_score_difference <= 1e-4
    assert check.mask_agreement >= 0.999
    outputs = run_onnx(session, image)
    assert outputs["masks"].shape[1:] == size and outputs["masks"].dtype == torch.bool
    assert outputs["labels"].dtype == torch.int64


def test_the_graph_applies_its_score_threshold_as_predict_does(exported, tmp_path):
    model, all_detections = exported
    image = torch.rand(3, 60, 80, generator=torch.Generator().manual_seed(3))
    scores = run_onnx(all_detections, image)["scores"]
    threshold = float(scores.median())
    session = onnx_session(
        export_onnx(model, tmp_path / "t.onnx", example_size=(48, 64), score_threshold=threshold)
    )
    check = compare_with_eager(model, session, image, score_threshold=threshold)
    assert check.ok and 0 < check.detections < len(scores)
    assert check.detections == int((scores >= threshold).sum())


def test_no_detection_gives_empty_outputs(tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny_config(score_threshold=0.999)).eval()
    session = onnx_session(export_onnx(model, tmp_path / "strict.onnx", example_size=(48, 64)))
    image = torch.rand(3, 60, 80, generator=torch.Generator().manual_seed(1))
    assert len(model.predict(image)[0]["boxes"]) == 0
    outputs = run_onnx(session, image)
    assert outputs["boxes"].shape == (0, 4)
    assert outputs["masks"].shape == (0, 60, 80)


def test_export_command_writes_a_checked_file(tmp_path, capsys):
    torch.manual_seed(0)
    weights = tmp_path / "model.pt"
    save_checkpoint(weights, build_model(tiny_config()))
    out = tmp_path / "model.onnx"
    assert main(["export", "--weights", str(weights), str(out), "--score-threshold", "0"]) == 0
    printed = capsys.readouterr().out
    assert out.stat().st_size > 100_000
    check = re.search(r"at score threshold 0: (\d+) detections, same count True", printed)
    assert check and int(check.group(1)) > 10, printed  # something was compared
    agreeing = re.search(r"same labels True, mask pixels agreeing ([\d.]+) %", printed)
    assert agreeing and float(agreeing.group(1)) >= 99.9, printed  # the check's own bound
    assert "intensity range: input 'image' is (3, H, W) float32 in [0, 1]" in printed
    again = tmp_path / "again.onnx"
    assert main(["export", "--weights", str(weights), str(again), "--format", "onnx"]) == 2  # no such option
    assert not again.exists()


def test_a_check_that_compares_nothing_says_so_and_compares_every_detection(tmp_path, capsys):
    torch.manual_seed(0)
    weights = tmp_path / "model.pt"
    save_checkpoint(weights, build_model(tiny_config()))
    # the random model's scores are all far under 0.99: the file's own threshold keeps nothing
    assert (
        main(["export", "--weights", str(weights), str(tmp_path / "m.onnx"), "--score-threshold", "0.99"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "no detection scores 0.99 or more on either side" in printed
    check = re.search(r"at score threshold 0: (\d+) detections, same count True", printed)
    assert check and int(check.group(1)) > 10, printed
    # a model that finds nothing at any score is reported as not checked
    nothing = build_model(tiny_config(score_threshold=0.999))
    save_checkpoint(weights, nothing)
    assert (
        main(["export", "--weights", str(weights), str(tmp_path / "n.onnx"), "--score-threshold", "0.99"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "0 detections" in printed and "not checked: the model detects nothing" in printed


def test_export_command_with_bad_weights_writes_nothing_and_keeps_an_old_file(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    out = tmp_path / "model.onnx"
    out.write_bytes(b"an earlier export")
    assert main(["export", "--weights", str(bad), str(out)]) == 2
    assert str(bad) in capsys.readouterr().err
    assert out.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt", "model.onnx"]


@pytest.mark.parametrize(
    "config",
    [replace(tiny_config(), masks=False), tiny_config(pooler="pool")],
    ids=["boxes-only", "roipool"],
)
def test_every_model_the_config_builds_exports_and_agrees(config, tmp_path):
    torch.manual_seed(0)
    model = build_model(config).eval()
    path = export_onnx(model, tmp_path / "model.onnx", example_size=(48, 64), score_threshold=0.0)
    session = onnx_session(path)
    names = [output.name for output in session.get_outputs()]
    assert names == (
        ["boxes", "scores", "labels"] if not config.masks else ["boxes", "scores", "labels", "masks"]
    )
    for size in ((48, 64), (70, 50)):
        image = torch.rand(3, *size, generator=torch.Generator().manual_seed(size[0]))
        check = compare_with_eager(model, session, image, score_threshold=0.0)
        assert check.detections > 10
        assert check.ok, check


def test_a_percentile_graph_agrees_with_the_eager_model_on_16_bit_images(tmp_path, capsys, nuclei_image):
    torch.manual_seed(0)
    gray = InputConfig(min_size=64, max_size=96, channels=1, pixel_mean=(0.5,), pixel_std=(0.25,))
    weights = tmp_path / "gray.pt"
    save_checkpoint(weights, build_model(replace(tiny_config(), input=gray)))  # intensity "auto"
    tifffile.imwrite(tmp_path / "check.tif", nuclei_image(60, 80, seed=3)[0])
    out = tmp_path / "gray.onnx"
    args = ["export", "--weights", str(weights), str(out), "--check-image", str(tmp_path / "check.tif")]
    # every detection of the random weights: compared one by one below
    assert main([*args, "--intensity", "percentile", "--score-threshold", "0"]) == 0  # the check agreed
    printed = capsys.readouterr().out
    assert "intensity percentile: input 'image' is (1, H, W) float32 of raw intensities" in printed
    assert "percentiles 1 and 99.8 to 0 and 1" in printed and "same count True" in printed

    model = with_export_intensity(load_model(weights, device="cpu"), "percentile")
    session = onnx_session(out)
    for size, seed in (((60, 80), 3), ((45, 130), 4)):
        values = nuclei_image(*size, seed=seed)[0]  # uint16, 0-235
        check = compare_with_eager(model, session, values, score_threshold=0.0)
        assert check.detections > 10
        assert check.same_count and check.same_labels
        assert check.max_box_difference <= 1e-3 and check.max_score_difference <= 1e-4
        assert check.mask_agreement >= 0.999
        # The graph takes the raw 16-bit values and normalizes them itself.
        raw = run_onnx(session, torch.from_numpy(values.astype(np.float32))[None])
        eager = model.predict(values, score_threshold=0.0)[0]
        torch.testing.assert_close(raw["scores"], eager["scores"], atol=1e-4, rtol=0)


def test_the_graphs_intensity_follows_the_model():
    auto, fixed = InputConfig(), InputConfig(intensity="minmax")
    assert export_intensity(auto) == "range"
    assert export_intensity(auto, "percentile") == "percentile"
    assert export_intensity(fixed) == "minmax" and export_intensity(fixed, "minmax") == "minmax"
    with pytest.raises(ValueError, match="normalizes intensities by 'minmax'"):
        export_intensity(fixed, "range")
    with pytest.raises(ValueError, match="must be one of range, minmax, percentile"):
        export_intensity(auto, "auto")


def test_export_refuses_an_intensity_the_model_was_not_trained_with(tmp_path, capsys):
    weights = tmp_path / "minmax.pt"
    save_checkpoint(weights, build_model(replace(tiny_config(), input=InputConfig(intensity="minmax"))))
    out = tmp_path / "model.onnx"
    assert main(["export", "--weights", str(weights), str(out), "--intensity", "percentile"]) == 2
    assert "model.input.intensity" in capsys.readouterr().err and not out.exists()
