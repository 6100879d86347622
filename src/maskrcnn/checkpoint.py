"""Checkpoint files: written atomically, read back with the config that built the model.

A checkpoint is a dict saved with torch.save: "format" ("maskrcnn"), "version", "config" (the
ModelConfig as a dict) and "model" (the state dict), plus what the writer adds (a training
run: its config, optimizer and RNG state, iteration).
"""

import os

import torch

from maskrcnn.config import ConfigError, ModelConfig, config_from_dict, config_to_dict
from maskrcnn.files import atomic_output

FORMAT = "maskrcnn"
# 2: the trunk and FPN are one module `backbone`, the box predictor part of `roi_heads.box_head`
# (version-1 files load through `modeling.mask_rcnn.upgrade_state_dict`).
VERSION = 2


def checkpoint_payload(model, **extra) -> dict:
    """What a checkpoint file holds: the model's weights and config, then `extra`'s entries."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "config": config_to_dict(model.config),
        "model": model.state_dict(),
        **extra,
    }


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save to `path` atomically: a crash mid-write leaves the previous file intact."""
    with atomic_output(path) as temporary:
        torch.save(obj, temporary)


def save_checkpoint(path, model, **extra) -> None:
    """Write model weights and config (plus e.g. optimizer state, iteration) to `path`."""
    atomic_save(checkpoint_payload(model, **extra), path)


def is_checkpoint(payload) -> bool:
    return isinstance(payload, dict) and payload.get("format") == FORMAT


def model_config_of(payload: dict, source: str) -> ModelConfig:
    try:
        return config_from_dict(ModelConfig, payload["config"])
    except (KeyError, ConfigError) as error:
        raise ValueError(f"{source}: invalid model config in checkpoint: {error}") from None
