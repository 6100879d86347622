"""How weights files are read, whatever reads them (load_model, init_weights=): damaged archives,
DistributedDataParallel's "module." prefix, files of other formats."""

import gzip

import pytest
import torch

import maskrcnn
from maskrcnn.checkpoint import save_checkpoint
from maskrcnn.interop.init_weights import load_initial_weights
from maskrcnn.interop.load import load_model, read_weights_file
from maskrcnn.interop.state_dicts import CheckpointError, without_ddp_prefix
from maskrcnn.testing import tiny_model_config


@pytest.fixture(scope="module")
def torchvision_state(tmp_path_factory) -> dict:
    """A torchvision Mask R-CNN state dict of 3 classes (FrozenBatchNorm, as fine-tuned from COCO)."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3)
    return {k: v for k, v in model.state_dict().items() if not k.endswith(".num_batches_tracked")}


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    theirs = b.state_dict()
    for key, value in a.state_dict().items():
        assert torch.equal(value, theirs[key]), key


def test_a_ddp_state_dict_loads_as_the_model_it_wraps(torchvision_state, tmp_path):
    """torch.save(ddp_model.state_dict()) puts "module." before every key: it is read without it,
    plain or wrapped, by load_model, from_torchvision and init_weights alike."""
    ddp = {f"module.{k}": v for k, v in torchvision_state.items()}
    torch.save(torchvision_state, tmp_path / "plain.pth")
    torch.save(ddp, tmp_path / "ddp.pth")
    torch.save({"model": ddp, "epoch": 3}, tmp_path / "ddp_wrapped.pth")
    plain = load_model(tmp_path / "plain.pth", device="cpu")
    for name in ("ddp.pth", "ddp_wrapped.pth"):
        assert_same_weights(plain, load_model(tmp_path / name, device="cpu"))
    assert_same_weights(plain, maskrcnn.from_torchvision(ddp))

    fine_tuned = maskrcnn.build_model(plain.config)
    assert load_initial_weights(fine_tuned, str(tmp_path / "ddp.pth")) == []
    assert_same_weights(plain, fine_tuned)


def test_a_ddp_checkpoint_of_ours_loads_too(tmp_path):
    torch.manual_seed(0)
    model = maskrcnn.build_model(tiny_model_config()).eval()
    save_checkpoint(tmp_path / "ours.pt", model)
    payload = torch.load(tmp_path / "ours.pt", weights_only=True)
    payload["model"] = {f"module.{k}": v for k, v in payload["model"].items()}
    torch.save(payload, tmp_path / "ddp.pt")
    assert_same_weights(model, load_model(tmp_path / "ddp.pt", device="cpu"))


def test_only_a_prefix_every_key_has_is_removed():
    weights = {"module.a": torch.zeros(1), "module.b": torch.ones(1)}
    assert list(without_ddp_prefix(weights)) == ["a", "b"]
    mixed = {"module.a": torch.zeros(1), "b": torch.ones(1)}
    assert without_ddp_prefix(mixed) is mixed
    wrapped = {"model": weights, "state_dict": mixed, "iteration": 4}
    assert without_ddp_prefix(wrapped) == {
        "model": without_ddp_prefix(weights),
        "state_dict": mixed,
        "iteration": 4,
    }
    for other in ({}, [1, 2], torch.zeros(2), {"module": 1}):
        assert without_ddp_prefix(other) is other


def test_a_damaged_checkpoint_is_refused_by_every_reader(tmp_path, damaged):
    """Bytes changed inside a tensor's data: torch.load reads other weights without a word;
    the member's CRC-32 says so."""
    torch.manual_seed(0)
    model = maskrcnn.build_model(tiny_model_config())
    save_checkpoint(tmp_path / "good.pt", model)
    path = tmp_path / "damaged.pt"
    path.write_bytes(damaged(tmp_path / "good.pt"))
    torch.load(path, weights_only=True)  # what the check is for: torch reads it
    pattern = rf"^{path}: corrupt checkpoint \(CRC mismatch in [^ ]+/data/\d+\)$"
    with pytest.raises(CheckpointError, match=pattern):
        load_model(path, device="cpu")
    with pytest.raises(CheckpointError, match=pattern):
        load_initial_weights(maskrcnn.build_model(tiny_model_config()), str(path))


def test_an_archive_written_without_crcs_loads(tmp_path):
    """torch.save with compute_crc32 off writes CRC 0 for every member: nothing to check."""
    from torch.utils.serialization import config

    torch.manual_seed(0)
    model = maskrcnn.build_model(tiny_model_config()).eval()
    before = config.save.compute_crc32
    config.save.compute_crc32 = False
    try:
        save_checkpoint(tmp_path / "no_crc.pt", model)
    finally:
        config.save.compute_crc32 = before
    assert_same_weights(model, load_model(tmp_path / "no_crc.pt", device="cpu"))


@pytest.mark.parametrize(
    "name, content, what",
    [
        ("ck.pt.gz", gzip.compress(b"\x80\x02}q\x00."), "a gzip archive: decompress it first"),
        ("arr.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '<f8'", "a numpy .npy array"),
        ("fake.h5", b"\x89HDF\r\n\x1a\n" + bytes(64), "an HDF5 file, e.g. Keras weights"),
        ("photo.pt", b"\xff\xd8\xff\xe0" + bytes(64), "a JPEG image"),
        # no magic, no pickle: torch's "Unsupported operand" is no refused Python object
        ("binary.pt", bytes(range(1, 64)), "torch.save writes a zip archive or a pickle; this is neither"),
    ],
)
def test_files_of_other_formats_are_named_as_what_they_are(tmp_path, name, content, what):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as error:
        read_weights_file(path)
    assert str(error.value) == f"{path}: not a PyTorch weights file ({what})"
