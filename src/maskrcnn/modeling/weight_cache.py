"""Weights derived from parameters (folded, reordered), cached for inference."""

from collections.abc import Callable

import torch
from torch import Tensor, nn


def derived_weight(module: nn.Module, name: str, sources: tuple, compute: Callable[[], object]):
    """compute(), recomputed on every call while autograd records (training needs the graph)
    and otherwise cached on `module` until one of the `sources` tensors changes: is updated
    in place, moved or cast. The cache is a plain attribute, so it never enters a state dict.
    """
    if torch.is_grad_enabled():
        return compute()
    key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in sources if isinstance(t, Tensor))
    cached = module.__dict__.get(name)
    if cached is None or cached[0] != key:
        cached = (key, compute())
        module.__dict__[name] = cached
    return cached[1]
