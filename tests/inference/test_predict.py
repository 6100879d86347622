"""`maskrcnn predict` on folders as users have them: stray files, macOS litter, a broken JPEG."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import maskrcnn
from maskrcnn.checkpoint import save_checkpoint
from maskrcnn.cli.main import main
from maskrcnn.inference.predict import find_images
from maskrcnn.testing import tiny_model_config


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_checkpoint(path, maskrcnn.build_model(tiny_model_config()))
    return path


def jpeg_bytes(width=64, height=48, seed=0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture()
def messy_folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.full((40, 56, 3), 90, dtype=np.uint8)).save(folder / "a.png")
    (folder / "b.jpg").write_bytes(jpeg_bytes())
    whole = jpeg_bytes(seed=1)
    (folder / "c_truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "notes.txt").write_text("shot list")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    (folder / "._b.jpg").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(32))
    (folder / "older").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(folder / "older" / "d.png")
    return folder


def test_predict_skips_and_names_what_is_not_an_image_and_reports_the_broken_one(
    messy_folder, weights, tmp_path, capsys
):
    out = tmp_path / "out"
    code = main(["predict", str(messy_folder), "--weights", str(weights), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1  # an image failed
    skipped = [line for line in captured.out.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1
    names = [messy_folder / n for n in (".DS_Store", "._b.jpg", "notes.txt")] + [f"{messy_folder / 'older'}/"]
    assert skipped[0] == f"skipped 4 entries (not images, or hidden): {', '.join(map(str, names))}"
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, captured.err
    assert errors[0].startswith(f"error: {messy_folder / 'c_truncated.jpg'}: ") and "truncated" in errors[0]
    assert "Traceback" not in captured.err
    images = json.loads((out / "images.json").read_text())
    # ids are positions among the images found: a.png, b.jpg, c_truncated.jpg
    expected = [(1, "a.png"), (2, "b.jpg")]
    assert [(i["id"], i["file_name"]) for i in images] == [(n, str(messy_folder / f)) for n, f in expected]
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png"]
    assert "in 2 of 3 images" in captured.out


def test_a_hidden_file_named_explicitly_is_tried(messy_folder, weights, tmp_path, capsys):
    hidden = messy_folder / "._b.jpg"
    code = main(["predict", str(hidden), "--weights", str(weights), "--out", str(tmp_path / "out")])
    assert code == 1 and f"error: {hidden}: " in capsys.readouterr().err


def test_a_folder_without_images_names_what_it_holds(tmp_path, weights, capsys):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / ".DS_Store").write_bytes(b"\x00")
    code = main(["predict", str(folder), "--weights", str(weights), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out.strip() == f"skipped 1 entry (not images, or hidden): {folder / '.DS_Store'}"
    assert captured.err.startswith(f"error: no images found in {folder}")


def test_find_images_keeps_explicit_files_and_sorts_directories(messy_folder):
    images, skipped = find_images([str(messy_folder / "notes.txt"), str(messy_folder)])
    assert images == [messy_folder / n for n in ("notes.txt", "a.png", "b.jpg", "c_truncated.jpg")]
    assert [p.name for p in skipped] == [".DS_Store", "._b.jpg", "notes.txt", "older"]


def test_predict_with_tiles_writes_what_tiled_model_predict_gives(weights, tmp_path):
    pixels = np.random.default_rng(4).integers(0, 256, (150, 230, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    out = tmp_path / "out"
    argv = ["predict", str(tmp_path / "wide.png"), "--weights", str(weights), "--out", str(out)]
    assert main([*argv, "--tile", "64", "--tile-overlap", "16", "--score-threshold", "0"]) == 0
    written = json.loads((out / "predictions.json").read_text())

    from maskrcnn.evaluation.coco import label_to_category
    from maskrcnn.evaluation.results import detections_to_coco
    from maskrcnn.interop.load import load_model

    model = load_model(weights, device=torch.device("cpu"))
    (tiled,) = model.predict(pixels, score_threshold=0.0, tile=64, tile_overlap=16)
    (whole,) = model.predict(pixels, score_threshold=0.0)
    expected = detections_to_coco(1, tiled, category_ids=label_to_category(model))
    assert len(expected) > len(whole["scores"])  # 12 tiles detect more than the one image
    assert [{k: v for k, v in e.items() if k != "file_name"} for e in written] == expected
    assert {tuple(e["segmentation"]["size"]) for e in written} == {(150, 230)}
    assert Image.open(out / "wide.png").size == (230, 150)
