"""Load a model from a weights file of any supported kind, told apart by its contents: this
project's checkpoints, torchvision's state dicts, detectron2's model-zoo files (.pkl, .pth).

Whatever the file holds, a file that is not usable fails with one CheckpointError whose
message is one line, "<file>: <problem>": the commands print it as it is.
"""

from pathlib import Path

import torch

from maskrcnn.checkpoint import is_checkpoint, model_config_of
from maskrcnn.config import ModelConfig
from maskrcnn.device import resolve_device
from maskrcnn.interop.detectron2 import detectron2_weights_of, from_detectron2
from maskrcnn.interop.safe_pickle import read_pickle_file
from maskrcnn.interop.state_dicts import CheckpointError, load_strict, without_ddp_prefix
from maskrcnn.interop.torchvision import check_norm_eps, from_torchvision, is_torchvision_state_dict
from maskrcnn.modeling.build import build_model
from maskrcnn.modeling.mask_rcnn import MaskRCNN, upgrade_state_dict

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
_PICKLE_MAGIC = b"\x80"  # the older format starts with a pickle of protocol 2 or later
# ... whose first object is torch's magic number, an 80-bit integer (pickle's LONG1 opcode, 10
# bytes): a pickle without it is a plain one (detectron2's .pkl).
_TORCH_LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_HEAD = 32  # bytes read to tell the formats apart
# Formats people hand over as weights that torch cannot read, by their magic bytes: named, so
# that the message says what the file is rather than what it is not.
_OTHER_FORMATS = (
    (b"\x1f\x8b", "a gzip archive: decompress it first"),
    (b"BZh", "a bzip2 archive: decompress it first"),
    (b"\xfd7zXZ\x00", "an xz archive: decompress it first"),
    (b"\x28\xb5\x2f\xfd", "a zstd archive: decompress it first"),
    (b"\x93NUMPY", "a numpy .npy array"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file, e.g. Keras weights"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
)


def read_weights_file(path) -> object:
    """A weights file's contents on the CPU, every failure a CheckpointError naming the file.

    torch files (zip or the older pickle format) are read by torch.load(weights_only=True);
    other pickles (detectron2's .pkl) by an unpickler that builds only plain data and numpy
    arrays (`interop.safe_pickle.read_pickle_file`). A zip member whose CRC-32 fails is
    refused (torch.load does not check them). A state dict saved from a
    DistributedDataParallel model comes back without the "module." before each key
    (`state_dicts.without_ddp_prefix`).
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a weights file")
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        with open(path, "rb") as file:
            head = file.read(_HEAD)
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read the file ({error.strerror or error})") from None
    if not head:
        raise CheckpointError(f"{path}: the file is empty, not a weights file")
    other = next((what for magic, what in _OTHER_FORMATS if head.startswith(magic)), None)
    if other:
        raise CheckpointError(f"{path}: not a PyTorch weights file ({other})")
    if head.startswith(_PICKLE_MAGIC) and _TORCH_LEGACY_MAGIC not in head:
        return without_ddp_prefix(read_pickle_file(path))
    if head.startswith(b"PK"):  # a zip archive (an empty one starts with its end record)
        problem = _zip_problem(path)
        if problem:
            raise CheckpointError(f"{path}: {problem}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a corrupt or foreign file fails in many ways inside pickle/zip
        raise CheckpointError(f"{path}: {_unreadable(error, head)}") from None
    return without_ddp_prefix(payload)


def load_model(
    path,
    device: str | torch.device | None = None,
    config: ModelConfig | None = None,
    norm_eps: float | None = None,
) -> MaskRCNN:
    """A model in eval mode from this project's checkpoint, torchvision's state-dict file or a
    detectron2 model-zoo file (.pkl or .pth).

    device: "auto" or None (CUDA when present, else the CPU), "cpu", "cuda", "cuda:N".
    config: for detectron2 files only, the model to build (e.g. with another
    `backbone.stride_in_1x1`); by default the model is read from the file's names and shapes,
    with detectron2's conventions (`interop.detectron2_config.detectron2_config`). The other kinds of
    file say their model themselves.
    norm_eps: for torchvision files only, the BatchNorm eps the weights were trained with
    (`interop.torchvision.from_torchvision`): 1e-5 for a model fine-tuned from an ImageNet
    trunk (`weights_backbone=...`), which the file cannot tell from COCO_V1's 0.

    torchvision files may hold the state dict itself or wrap it under "model" or "state_dict".
    """
    check_norm_eps(norm_eps)
    payload = read_weights_file(path)
    source = str(path)
    detectron2 = None if is_checkpoint(payload) else detectron2_weights_of(payload, source)
    if config is not None and detectron2 is None:
        kind = "maskrcnn checkpoint" if is_checkpoint(payload) else "file"
        raise CheckpointError(
            f"{source}: a model config is given for detectron2 files only, and this {kind} is not one "
            "(its model is built from the file)"
        )
    if norm_eps is not None and (detectron2 is not None or is_checkpoint(payload)):
        says = (
            "a detectron2 file's model has eps 1e-5 (config= builds another)"
            if detectron2 is not None
            else "a maskrcnn checkpoint's config holds its eps"
        )
        raise CheckpointError(f"{source}: norm_eps is for torchvision files only: {says}")
    if detectron2 is not None:
        model = _built(lambda: from_detectron2(detectron2, config, source), source)
    elif is_checkpoint(payload):
        model = _from_checkpoint(payload, source)
    else:
        state_dict = _torchvision_state_dict(payload, source)
        model = _built(lambda: from_torchvision(state_dict, source=source, norm_eps=norm_eps), source)
    return model.to(resolve_device(str(device) if device is not None else "auto")).eval()


def _torchvision_state_dict(payload, source: str) -> dict:
    """The torchvision state dict `payload` is or wraps (under "model" or "state_dict")."""
    state_dict = payload
    if isinstance(payload, dict) and not is_torchvision_state_dict(payload):
        state_dict = payload.get("model", payload.get("state_dict", payload))
    if not is_torchvision_state_dict(state_dict):
        raise CheckpointError(
            f"{source}: not a maskrcnn checkpoint nor a torchvision Mask R-CNN state dict"
            + _classifier_hint(state_dict)
        )
    _check_tensors(state_dict, source)
    return state_dict


def _from_checkpoint(payload: dict, source: str) -> MaskRCNN:
    weights = payload.get("model")
    if not isinstance(weights, dict):
        raise CheckpointError(f"{source}: maskrcnn checkpoint without a state dict under 'model'")
    _check_tensors(weights, source)
    try:
        config = model_config_of(payload, source)
    except ValueError as error:
        raise CheckpointError(_one_line(error)) from None
    model = _built(lambda: build_model(config), source)
    load_strict(model, upgrade_state_dict(weights), source)
    return model


def _built(build, source: str) -> MaskRCNN:
    """build(), with the errors of a config no model can have (e.g. -1 classes) as CheckpointError."""
    try:
        return build()
    except CheckpointError:
        raise
    except (ValueError, TypeError, RuntimeError) as error:
        raise CheckpointError(
            f"{source}: its model configuration builds no model ({type(error).__name__}: {_one_line(error)})"
        ) from None


def _check_tensors(state_dict: dict, source: str) -> None:
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{source}: not a state dict: entry {key!r} holds a {type(value).__name__}, not a tensor"
            )


def _classifier_hint(payload) -> str:
    if isinstance(payload, dict) and "conv1.weight" in payload and "fc.weight" in payload:
        return (
            "; it looks like an image classifier's state dict (conv1 ... fc, e.g. torchvision's ResNet), "
            "which training takes as init_weights= for the trunk"
        )
    return ""


def _zip_problem(path: Path) -> str | None:
    """What a zip file holds when it is not torch.save's archive (which holds a data.pkl in
    one folder, beside the tensors' records), or is damaged (a member's CRC-32 fails), or None."""
    import zipfile
    import zlib

    try:
        with zipfile.ZipFile(path) as archive:
            names = [info.filename for info in archive.infolist() if not info.is_dir()]
            damaged = _crc_mismatch(archive) if names else None
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
        return f"truncated or corrupt checkpoint, cannot be read (a zip archive: {_one_line(error)})"
    if not names:
        return "an empty zip archive, not a PyTorch weights file"
    if damaged:
        return f"corrupt checkpoint (CRC mismatch in {damaged})"
    if any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        return None
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return (
        f"a zip archive of {len(names)} file{'s' * (len(names) != 1)} ({shown}), not a PyTorch weights "
        "file (torch.save's archive holds a data.pkl)"
    )


def _crc_mismatch(archive) -> str | None:
    """The first member whose bytes fail their CRC-32, or None. torch.load checks no CRC, so a
    file damaged on disk or in transfer inside tensor data would load as other weights."""
    import zipfile

    for info in archive.infolist():
        # torch.save with torch.utils.serialization.config.save.compute_crc32 off writes CRC 0
        # for every member: such a file has nothing to check.
        if info.is_dir() or info.CRC == 0:
            continue
        try:
            with archive.open(info) as member:  # ZipExtFile checks the CRC at the end of the member
                while member.read(1 << 22):
                    pass
        except zipfile.BadZipFile:
            return info.filename
    return None


def _unreadable(error: Exception, head: bytes) -> str:
    """One line saying why torch.load refused a file that starts with `head`."""
    message = _one_line(error)
    # "Unsupported operand": a byte that is no pickle opcode, i.e. not a pickle at all; a refused
    # global is a real pickle asking for an object.
    if "Weights only load failed" in str(error) and "Unsupported operand" not in str(error):
        # "Unsupported global: GLOBAL m.f was not an allowed global ...", or for a blocked module
        # "Trying to load unsupported GLOBAL m.f whose module m is blocked"
        refused = next((line for line in str(error).splitlines() if "GLOBAL " in line), "")
        what = refused.split("GLOBAL")[-1].split()[0] if "GLOBAL" in refused else "Python objects"
        return (
            f"holds {what}, not only tensors (a whole pickled model?), which torch.load(weights_only=True) "
            "refuses to run; save model.state_dict() or a maskrcnn checkpoint"
        )
    if head.startswith(_ZIP_MAGIC):
        return f"truncated or corrupt checkpoint, cannot be read ({message})"
    if head.startswith(_PICKLE_MAGIC):
        return f"truncated or corrupt weights file, cannot be read ({type(error).__name__}: {message})"
    return "not a PyTorch weights file (torch.save writes a zip archive or a pickle; this is neither)"


def _one_line(error) -> str:
    """The first sentence of a message (PyTorch's run to several paragraphs), at most 200 characters."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    first = lines[0] if lines else ""
    sentence = first.split(". ")[0].rstrip(".")
    return sentence if len(sentence) <= 200 else sentence[:197] + "..."
