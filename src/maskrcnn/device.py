"""The device a command runs on, from the `device` option or config key."""

import torch


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """ "auto" picks CUDA when present (one GPU per local process), else the CPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device
