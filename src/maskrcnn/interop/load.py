"""Load a model from a weights file of any supported kind, told apart by its contents."""

from pathlib import Path

import torch

from maskrcnn.engine.checkpoint import is_checkpoint, model_config_of
from maskrcnn.engine.distributed import resolve_device
from maskrcnn.interop.state_dicts import CheckpointError, load_strict
from maskrcnn.interop.torchvision import from_torchvision, is_torchvision_state_dict
from maskrcnn.modeling.mask_rcnn import MaskRCNN, build_model


def read_weights_file(path) -> object:
    """torch.load a file on the CPU, turning every failure into a CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a corrupt or foreign file fails in many ways inside pickle/zip
        raise CheckpointError(f"{path}: cannot read weights file ({type(error).__name__}: {error})") from None


def load_model(path, device: str | torch.device | None = None) -> MaskRCNN:
    """A model in eval mode from this project's checkpoint or torchvision's state-dict file.

    device: "auto" or None (CUDA when present, else the CPU), "cpu", "cuda", "cuda:N".

    torchvision files may hold the state dict itself or wrap it under "model" or "state_dict".
    """
    payload = read_weights_file(path)
    source = str(path)
    if is_checkpoint(payload):
        model = build_model(model_config_of(payload, source))
        load_strict(model, payload["model"], source)
    else:
        state_dict = payload
        if isinstance(payload, dict) and not is_torchvision_state_dict(payload):
            state_dict = payload.get("model", payload.get("state_dict", payload))
        if not is_torchvision_state_dict(state_dict):
            raise CheckpointError(
                f"{source}: not a maskrcnn checkpoint nor a torchvision Mask R-CNN state dict"
            )
        model = from_torchvision(state_dict, source=source)
    return model.to(resolve_device(str(device) if device is not None else "auto")).eval()
