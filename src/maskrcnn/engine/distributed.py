"""Process-group set-up for `torchrun` (DDP): gloo on CPU, NCCL on CUDA."""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from maskrcnn.device import resolve_device


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


def barrier(context: Context) -> None:
    """Wait until every process gets here (nothing to do in a single process)."""
    if context.distributed:
        dist.barrier()


def all_reduce_mean(values: dict[str, torch.Tensor], context: Context) -> dict[str, float]:
    """Average scalar tensors over all processes (for logging)."""
    names = sorted(values)
    stacked = torch.stack([values[n].detach().float() for n in names])
    if context.distributed:
        dist.all_reduce(stacked)
        stacked /= context.world_size
    return {n: v.item() for n, v in zip(names, stacked)}


def all_gather(obj, context: Context) -> list:
    """Every process's picklable `obj`, in rank order, on every process."""
    if not context.distributed:
        return [obj]
    gathered = [None] * context.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def from_main(obj, context: Context):
    """Rank 0's picklable `obj` on every process (a decision rank 0 alone could take)."""
    if not context.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_main(obj, context: Context) -> list | None:
    """Every process's picklable `obj`, in rank order, on rank 0; None on the other ranks.

    Unlike `all_gather`, the objects (e.g. a split's detections) travel to rank 0 only.
    """
    if not context.distributed:
        return [obj]
    gathered = [None] * context.world_size if context.is_main else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def raise_if_any_failed(failure: BaseException | None, context: Context) -> None:
    """Call on every process with the exception it hit in a shared step (or None): if any
    process failed, all raise, so that none is left waiting in the next collective.

    A process re-raises its own exception; the others raise one naming the failed rank and
    its message: a ValueError or OSError if the failure was one (a bad file, which the
    commands report on one line), else a RuntimeError.
    """
    if not context.distributed:
        if failure is not None:
            raise failure
        return
    kind = next((k for k in _SHARED_FAILURES if isinstance(failure, k)), RuntimeError)
    reports = all_gather(None if failure is None else (kind.__name__, str(failure)), context)
    if failure is not None:
        raise failure
    for rank, report in enumerate(reports):
        if report is not None:
            name, message = report
            kind = next((k for k in _SHARED_FAILURES if k.__name__ == name), RuntimeError)
            raise kind(f"process {rank}: {message}")


_SHARED_FAILURES = (ValueError, OSError)
