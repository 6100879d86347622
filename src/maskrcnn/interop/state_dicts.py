"""Renaming and strict loading of state dicts."""

import re

import torch
from torch import nn


class CheckpointError(ValueError):
    """A weights file cannot be used with the model it was given to."""


def rename_keys(state_dict: dict, rules: list[tuple[str, str]]) -> dict:
    """Apply the first matching (regex, replacement) rule to every key; unmatched keys stay."""
    renamed = {}
    for key, value in state_dict.items():
        for pattern, replacement in rules:
            new_key, count = re.subn(pattern, replacement, key)
            if count:
                key = new_key
                break
        renamed[key] = value
    return renamed


def load_strict(model: nn.Module, state_dict: dict, source: str) -> None:
    """Copy `state_dict` into `model`, failing with one message that lists every missing key,
    unexpected key and shape mismatch. `source` names the file or origin in the message, which
    is one line (the commands print it as `error: <message>`)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{key}: file has {tuple(state_dict[key].shape)}, model expects {tuple(expected[key].shape)}"
        for key in sorted(set(expected) & set(state_dict))
        if tuple(torch.as_tensor(state_dict[key]).shape) != tuple(expected[key].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): " + ", ".join(missing))
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): " + ", ".join(unexpected))
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): " + "; ".join(mismatched))
    if problems:
        raise CheckpointError(f"{source}: weights do not fit the model: " + " | ".join(problems))
    model.load_state_dict({k: torch.as_tensor(v) for k, v in state_dict.items()})
