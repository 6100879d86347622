"""Numeric precision of a run: float32, or bfloat16 / float16 autocast.

torch is imported where it is used: the command line sets `strict_precision` before its
checks, which must not wait for torch to load.
"""

import contextlib
import contextvars
import warnings
from typing import TYPE_CHECKING

from maskrcnn.choices import PRECISIONS

if TYPE_CHECKING:
    import torch


def cpu_has_fast_bfloat16() -> bool:
    """Whether this CPU has bfloat16 matrix instructions (AVX-512 BF16 or AMX).

    Without them PyTorch emulates bfloat16 arithmetic: on an AVX2-only EPYC a 1024x1024
    matrix product ran at 0.9 GFLOP/s against 108 in float32, and the shapes training step
    under bfloat16 autocast took 3.1 s against 0.32 s.
    """
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast_dtype(precision: str, device: "torch.device", what: str = "precision") -> "torch.dtype | None":
    """None for float32; "auto" is float16 on CUDA, and on the CPU bfloat16 where the CPU
    has bfloat16 instructions, else float32. An explicit "bf16" on a CPU without them
    is kept, with a warning.

    what: the setting's name, for the messages.
    """
    import torch

    on_cpu = torch.device(device).type == "cpu"
    if precision == "auto":
        precision = "fp16" if torch.device(device).type == "cuda" else "bf16"
        if on_cpu and not cpu_has_fast_bfloat16():
            precision = "fp32"
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"{what} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and on_cpu and not cpu_has_fast_bfloat16():
        _slow(
            f"{what} bf16: this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX; PyTorch "
            f"reports {torch.backends.cpu.get_cpu_capability()}), so bfloat16 is emulated and "
            "runs 10-100x slower than float32; fp32 is the faster choice here"
        )
    if precision == "fp16" and on_cpu:
        _slow(
            f"{what} fp16 on the CPU: PyTorch's float16 kernels there are slow (a shapes training "
            "step took 3.8 s against 0.34 s in fp32 on a 2-core AVX2 EPYC, 9 s against 0.2 s on an "
            "AVX-512 Xeon); fp16 is for CUDA: use fp32, or bf16 on a CPU with AMX or AVX-512 BF16"
        )
    return dtypes[precision]


_strict = contextvars.ContextVar("strict_precision", default=False)


@contextlib.contextmanager
def strict_precision(enabled: bool = True):
    """Within this block a precision that is slow on this hardware is refused (ValueError)
    instead of warned about: the commands' --strict."""
    token = _strict.set(enabled)
    try:
        yield
    finally:
        _strict.reset(token)


def _slow(message: str) -> None:
    if _strict.get():
        raise ValueError(f"{message} (refused under --strict)")
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def autocast_context(precision: str, device: "torch.device", what: str = "precision"):
    """A context running matrix products and convolutions in the chosen precision.

    Everything that decodes boxes, ranks scores or thresholds masks stays float32: the
    heads hand their outputs back as float32.
    """
    import torch

    device = torch.device(device)
    dtype = autocast_dtype(precision, device, what)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
