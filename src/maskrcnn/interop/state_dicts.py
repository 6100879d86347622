"""Renaming and strict loading of state dicts."""

import re
from collections.abc import Callable

import torch
from torch import nn


class CheckpointError(ValueError):
    """A weights file cannot be used with the model it was given to."""


def rename_key(key: str, rules: list[tuple[str, str]]) -> str:
    """`key` renamed by the first (regex, replacement) rule that matches it; unchanged when none does."""
    for pattern, replacement in rules:
        new_key, count = re.subn(pattern, replacement, key)
        if count:
            return new_key
    return key


def rename_keys(state_dict: dict, rules: list[tuple[str, str]]) -> dict:
    """Apply the first matching (regex, replacement) rule to every key; unmatched keys stay."""
    return {rename_key(key, rules): value for key, value in state_dict.items()}


DDP_PREFIX = "module."  # what DistributedDataParallel's state_dict() puts before every key


def without_ddp_prefix(payload):
    """`payload` with the "module." of a DistributedDataParallel model's state dict removed from
    every key, at its top level or under "model" or "state_dict" (torch.save(ddp.state_dict())
    instead of ddp.module's, a common slip); anything else is returned as it is."""

    def stripped(weights):
        if not isinstance(weights, dict) or not weights:
            return weights
        if not all(isinstance(key, str) and key.startswith(DDP_PREFIX) for key in weights):
            return weights
        return {key[len(DDP_PREFIX) :]: value for key, value in weights.items()}

    payload = stripped(payload)
    for wrapper in ("model", "state_dict"):
        inner = payload.get(wrapper) if isinstance(payload, dict) else None
        if stripped(inner) is not inner:
            payload = {**payload, wrapper: stripped(inner)}
    return payload


def load_strict(
    model: nn.Module, state_dict: dict, source: str, file_name: Callable[[str], str] | None = None
) -> None:
    """Copy `state_dict` into `model`, failing with one message that lists every missing key,
    unexpected key and shape mismatch. `source` names the file or origin in the message, which
    is one line (the commands print it as `error: <message>`).

    file_name: for a state dict renamed from another project's layout, the name a key of the
    model has in the file (or would have, for a key the file lacks); the message uses the
    file's names, which are the ones its owner can look for. Default: the model's names.
    """
    expected = model.state_dict()
    check_fit(
        {key: tuple(value.shape) for key, value in expected.items()},
        {key: tuple(torch.as_tensor(value).shape) for key, value in state_dict.items()},
        source,
        file_name,
    )
    model.load_state_dict({k: torch.as_tensor(v) for k, v in state_dict.items()})


def check_fit(
    expected: dict[str, tuple[int, ...]],
    given: dict[str, tuple[int, ...]],
    source: str,
    file_name: Callable[[str], str] | None = None,
) -> None:
    """Raise one CheckpointError listing every key of `expected` that `given` lacks, every key
    `given` has in excess and every shape that differs (key -> shape, both), named by
    `file_name` (see `load_strict`); nothing when they agree."""
    named = file_name or (lambda key: key)
    missing = sorted(named(key) for key in set(expected) - set(given))
    unexpected = sorted(named(key) for key in set(given) - set(expected))
    mismatched = [
        f"{named(key)}: file has {given[key]}, model expects {expected[key]}"
        for key in sorted(set(expected) & set(given), key=named)
        if given[key] != expected[key]
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
