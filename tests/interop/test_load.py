"""Unusable --weights files: predict, eval and export print one `error: <file>: <problem>` line
(no traceback) and exit with code 2."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import maskrcnn
from maskrcnn.checkpoint import save_checkpoint
from maskrcnn.cli.main import main
from maskrcnn.interop.load import load_model
from maskrcnn.testing import tiny_model_config

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "shapes.yaml"


@pytest.fixture(scope="module")
def files(tmp_path_factory, damaged) -> Path:
    """A folder with an image, a split of it, a good checkpoint and bad weights files of every kind."""
    root = tmp_path_factory.mktemp("weights")
    Image.fromarray(np.full((48, 64, 3), 128, dtype=np.uint8)).save(root / "image.png")
    split = {
        "images": [{"id": 1, "file_name": "image.png", "height": 48, "width": 64}],
        "annotations": [],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    (root / "split.json").write_text(json.dumps(split))
    torch.manual_seed(0)
    model = maskrcnn.build_model(tiny_model_config())
    save_checkpoint(root / "good.pt", model)
    whole = (root / "good.pt").read_bytes()

    (root / "folder.pt").mkdir()
    (root / "notes.pt").write_text("these are not weights\n")
    (root / "empty.pt").write_bytes(b"")
    (root / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    legacy = root / "legacy.pt"
    torch.save({"model": model.state_dict()}, legacy, _use_new_zipfile_serialization=False)
    (root / "truncated_legacy.pt").write_bytes(legacy.read_bytes()[: legacy.stat().st_size // 2])
    # a maskrcnn checkpoint whose weights belong to another configuration (more classes)
    misfit = torch.load(root / "good.pt", weights_only=True)
    misfit["config"]["num_classes"] = 5
    misfit["config"]["class_names"] = ["__background__", "a", "b", "c", "d"]
    torch.save(misfit, root / "misfit.pt")
    # a maskrcnn checkpoint whose config no model can have
    impossible = torch.load(root / "good.pt", weights_only=True)
    impossible["config"]["num_classes"] = -1
    torch.save(impossible, root / "impossible.pt")
    no_model = torch.load(root / "good.pt", weights_only=True)
    del no_model["model"]
    torch.save(no_model, root / "no_model.pt")
    torch.save(torchvision.models.resnet18().state_dict(), root / "resnet18.pth")
    torch.save(model, root / "pickled_module.pt")
    import zipfile

    zipfile.ZipFile(root / "empty_zip.pt", "w").close()
    with zipfile.ZipFile(root / "zipped_text.pt", "w") as archive:
        archive.writestr("readme.txt", "not weights")
    (root / "damaged.pt").write_bytes(damaged(root / "good.pt"))
    (root / "gzipped.pt").write_bytes(gzip.compress(whole))
    np.save(root / "array.npy", np.zeros(3))
    (root / "keras.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    return root


CASES = {
    "folder.pt": "is a directory, not a weights file",
    "notes.pt": "not a PyTorch weights file",
    "empty.pt": "the file is empty",
    "truncated.pt": "truncated or corrupt checkpoint",
    "truncated_legacy.pt": "truncated or corrupt weights file",
    "misfit.pt": "weights do not fit the model: shape mismatches (6): roi_heads.box_head.bbox_pred.bias",
    "impossible.pt": "its model configuration builds no model",
    "no_model.pt": "maskrcnn checkpoint without a state dict under 'model'",
    "resnet18.pth": "not a maskrcnn checkpoint nor a torchvision Mask R-CNN state dict; it looks like an",
    "pickled_module.pt": "holds maskrcnn.modeling.mask_rcnn.MaskRCNN, not only tensors",
    "empty_zip.pt": "an empty zip archive, not a PyTorch weights file",
    "zipped_text.pt": "a zip archive of 1 file (readme.txt), not a PyTorch weights file",
    "damaged.pt": "corrupt checkpoint (CRC mismatch in ",
    "gzipped.pt": "not a PyTorch weights file (a gzip archive: decompress it first)",
    "array.npy": "not a PyTorch weights file (a numpy .npy array)",
    "keras.h5": "not a PyTorch weights file (an HDF5 file",
}


def commands(root: Path, weights: Path, out: Path) -> dict[str, list[str]]:
    return {
        "predict": ["predict", str(root / "image.png"), "--weights", str(weights), "--out", str(out)],
        "eval": ["eval", str(CONFIG), "--weights", str(weights), "--json", str(root / "split.json")]
        + ["--images", str(root), "--out", str(out), "--device", "cpu"],
        "export": ["export", str(out / "model.onnx"), "--weights", str(weights)],
    }


@pytest.mark.parametrize("command", ["predict", "eval", "export"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_unusable_weights_give_one_error_line_and_exit_2(files, tmp_path, capsys, command, name):
    weights = files / name
    code = main(commands(files, weights, tmp_path / "out")[command])
    captured = capsys.readouterr()
    assert code == 2
    # A path that is no file is the option's problem, found before torch is loaded; what is
    # wrong inside a file, the loader's, naming the file.
    named = f"--weights {weights}" if name == "folder.pt" else str(weights)
    assert captured.err.startswith(f"error: {named}: {CASES[name]}"), captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert not (tmp_path / "out").exists()  # nothing written


def test_the_good_checkpoint_of_the_fixture_loads(files, tmp_path):
    # The same commands with the file the bad ones were made from: the failures above are the files'.
    assert main(commands(files, files / "good.pt", tmp_path / "out")["predict"]) == 0
    assert json.loads((tmp_path / "out" / "images.json").read_text())[0]["file_name"].endswith("image.png")


def test_a_checkpoint_with_the_keys_of_earlier_versions_loads_the_same_model(tmp_path):
    """Files written before the trunk and FPN became one backbone and the box predictor part
    of the box head (keys trunk.*, fpn.*, roi_heads.box_predictor.*) still load."""
    from maskrcnn.checkpoint import save_checkpoint
    from maskrcnn.modeling.build import build_model
    from maskrcnn.modeling.mask_rcnn import LEGACY_KEY_PREFIXES
    from maskrcnn.testing import tiny_model_config

    torch.manual_seed(0)
    model = build_model(tiny_model_config()).eval()
    save_checkpoint(tmp_path / "current.pt", model)
    payload = torch.load(tmp_path / "current.pt", weights_only=True)
    legacy = {}
    for key, value in payload["model"].items():
        for old, new in LEGACY_KEY_PREFIXES:
            if key.startswith(new):
                key = old + key[len(new) :]
                break
        legacy[key] = value
    assert "trunk.stem.conv.weight" in legacy and "fpn.lateral.0.weight" in legacy
    assert "roi_heads.box_predictor.cls_score.weight" in legacy
    payload["model"] = legacy
    torch.save(payload, tmp_path / "legacy.pt")
    loaded = load_model(tmp_path / "legacy.pt", device="cpu")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
