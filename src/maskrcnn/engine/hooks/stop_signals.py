"""SIGINT, SIGTERM or SIGUSR1 end the run after the step it is in (every process agrees)."""

import torch

from maskrcnn.engine import distributed
from maskrcnn.engine.hooks.base import HookBase
from maskrcnn.engine.stop import StopRequest


class StopSignals(HookBase):
    """Records a stop signal (to this process or its group, DataLoader workers included) and
    sets `trainer.stopping` on every process after the step in which any process got one; the
    checkpoint hook then saves last.pt and the trainer raises `Interrupted`."""

    def __init__(self):
        self.request = StopRequest()

    def before_train(self, trainer) -> None:
        self.request.__enter__()

    def after_step(self, trainer) -> None:
        trainer.stopping = _agree(self.request.requested, trainer.run.context)
        if trainer.stopping:
            trainer.stop_signum = self.request.signum

    def close(self, trainer) -> None:
        self.request.__exit__(None, None, None)


def _agree(flag: bool, context: distributed.Context) -> bool:
    """True on every process when any process was asked to stop."""
    if not context.distributed:
        return flag
    value = torch.tensor([float(flag)], device=context.device)
    torch.distributed.all_reduce(value)
    return bool(value.item() > 0)
