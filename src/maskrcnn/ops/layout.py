"""Memory layout of gradients."""

import torch
from torch import Tensor

from maskrcnn.fast_path_switch import fast_paths_enabled, ran


class _DenseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        layout = torch.channels_last if ctx.channels_last else torch.contiguous_format
        return grad.contiguous(memory_format=layout)


def dense_gradient(x: Tensor) -> Tensor:
    """x unchanged; its gradient is made dense in x's layout before it flows further back.

    A convolution whose output is only read through slices and reshapes (the RPN's
    per-level outputs, concatenated over levels and indexed by anchor) gets back a
    strided gradient that is neither contiguous nor channels-last, and the convolution
    backward then takes a slow generic path: for the RPN's 1x1 convs on P2 at 800 px,
    143 ms instead of a few. Copying the (small) gradient first is much cheaper.
    """
    if not fast_paths_enabled():  # fast paths off: the gradient flows back as autograd makes it
        return x
    if not torch.is_grad_enabled() or not x.requires_grad:
        return x
    ran("dense_gradient")
    return _DenseGradient.apply(x)
