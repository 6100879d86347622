"""Process-group set-up for `torchrun` (DDP): gloo on CPU, NCCL on CUDA."""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Context:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


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


def setup(device_spec: str = "auto") -> Context:
    """Join the process group `torchrun` describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local_rank)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Context(rank, world_size, device)


def teardown(context: Context) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(values: dict[str, torch.Tensor], context: Context) -> dict[str, float]:
    """Average scalar tensors over all processes (for logging)."""
    names = sorted(values)
    stacked = torch.stack([values[n].detach().float() for n in names])
    if context.distributed:
        dist.all_reduce(stacked)
        stacked /= context.world_size
    return {n: v.item() for n, v in zip(names, stacked)}
