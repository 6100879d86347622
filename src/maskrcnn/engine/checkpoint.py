"""Checkpoint files: written atomically, read back with the config that built the model."""

import os

import torch

from maskrcnn.config import ConfigError, ModelConfig, config_from_dict, config_to_dict
from maskrcnn.files import atomic_output

FORMAT = "maskrcnn"
VERSION = 1


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save to `path` atomically: a crash mid-write leaves the previous file intact."""
    with atomic_output(path) as temporary:
        torch.save(obj, temporary)


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
