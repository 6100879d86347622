"""Load a model from a weights file of any supported kind, told apart by its contents.

Whatever the file holds, a file that is not usable fails with one CheckpointError whose
message is one line, "<file>: <problem>": the commands print it as it is.
"""

from pathlib import Path

import torch

from maskrcnn.checkpoint import is_checkpoint, model_config_of
from maskrcnn.device import resolve_device
from maskrcnn.interop.state_dicts import CheckpointError, load_strict
from maskrcnn.interop.torchvision import from_torchvision, is_torchvision_state_dict
from maskrcnn.modeling.mask_rcnn import MaskRCNN, build_model, upgrade_state_dict

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
_PICKLE_MAGIC = b"\x80"  # the older format starts with a pickle of protocol 2 or later


def read_weights_file(path) -> object:
    """torch.load a file on the CPU, turning every failure into a CheckpointError naming it."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a weights file")
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        with open(path, "rb") as file:
            head = file.read(len(_ZIP_MAGIC))
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read the file ({error.strerror or error})") from None
    if not head:
        raise CheckpointError(f"{path}: the file is empty, not a weights file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a corrupt or foreign file fails in many ways inside pickle/zip
        raise CheckpointError(f"{path}: {_unreadable(error, head)}") from None


def load_model(path, device: str | torch.device | None = None) -> MaskRCNN:
    """A model in eval mode from this project's checkpoint or torchvision's state-dict file.

    device: "auto" or None (CUDA when present, else the CPU), "cpu", "cuda", "cuda:N".

    torchvision files may hold the state dict itself or wrap it under "model" or "state_dict".
    """
    payload = read_weights_file(path)
    source = str(path)
    if is_checkpoint(payload):
        model = _from_checkpoint(payload, source)
    else:
        state_dict = payload
        if isinstance(payload, dict) and not is_torchvision_state_dict(payload):
            state_dict = payload.get("model", payload.get("state_dict", payload))
        if not is_torchvision_state_dict(state_dict):
            raise CheckpointError(
                f"{source}: not a maskrcnn checkpoint nor a torchvision Mask R-CNN state dict"
                + _classifier_hint(state_dict)
            )
        _check_tensors(state_dict, source)
        model = _built(lambda: from_torchvision(state_dict, source=source), source)
    return model.to(resolve_device(str(device) if device is not None else "auto")).eval()


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


def _unreadable(error: Exception, head: bytes) -> str:
    """One line saying why torch.load refused a file that starts with `head`."""
    message = _one_line(error)
    if "Weights only load failed" in str(error):
        refused = next((line for line in str(error).splitlines() if "Unsupported global" in line), "")
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
