"""Checkpoint files: written atomically, read back with the config that built the model."""

import os
import tempfile
from pathlib import Path

import torch

from maskrcnn.config import ConfigError, ModelConfig, config_from_dict, config_to_dict

FORMAT = "maskrcnn"
VERSION = 1


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file beside `path`, then rename it over `path`.

    A crash mid-write leaves the previous file intact, never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(obj, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_checkpoint(path, model, **extra) -> None:
    """Write model weights and config (plus e.g. optimizer state, iteration) to `path`."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": config_to_dict(model.config),
        "model": model.state_dict(),
    }
    payload.update(extra)
    atomic_save(payload, path)


def is_checkpoint(payload) -> bool:
    return isinstance(payload, dict) and payload.get("format") == FORMAT


def model_config_of(payload: dict, source: str) -> ModelConfig:
    try:
        return config_from_dict(ModelConfig, payload["config"])
    except (KeyError, ConfigError) as error:
        raise ValueError(f"{source}: invalid model config in checkpoint: {error}") from None
