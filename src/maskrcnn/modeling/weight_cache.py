"""Weights derived from parameters (folded, reordered), computed once per inference pass.

A derived weight is valid only as long as its sources are unchanged, and no cheap test
tells that reliably: PyTorch's fused optimizers write parameters without bumping their
version counters, and neither does an update through `param.data`. So a derived weight
lives for one inference pass (`inference_pass()`, opened by the model's forward) and is
computed afresh in the next one: about 15-25 ms for a ResNet-50 trunk on a 2-core CPU,
against seconds for the pass itself, and never stale.
"""

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import torch
from torch import nn

_current_pass: contextvars.ContextVar[object | None] = contextvars.ContextVar("inference_pass", default=None)


@contextlib.contextmanager
def inference_pass() -> Iterator[None]:
    """Within this block derived weights are computed once and shared; nested blocks join
    the outer pass. Parameters must not change inside it (inference does not change them)."""
    if _current_pass.get() is not None:
        yield
        return
    token = _current_pass.set(object())
    try:
        yield
    finally:
        _current_pass.reset(token)


def derived_weight(module: nn.Module, name: str, compute: Callable[[], object]):
    """compute(), shared by every use within the current inference pass (under no_grad) and
    recomputed otherwise: always while autograd records (training needs the graph), and
    outside an inference pass. The value is kept in a plain attribute of `module`, so it
    never enters a state dict; a new pass replaces it.
    """
    pass_token = _current_pass.get()
    if pass_token is None or torch.is_grad_enabled():
        return compute()
    cached = module.__dict__.get(name)
    if cached is None or cached[0] is not pass_token:
        cached = (pass_token, compute())
        module.__dict__[name] = cached
    return cached[1]
