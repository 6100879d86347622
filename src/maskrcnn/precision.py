"""Numeric precision of a run: float32, or bfloat16 / float16 autocast."""

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "fp16", "auto")


def autocast_dtype(precision: str, device: torch.device, what: str = "precision") -> torch.dtype | None:
    """None for float32; "auto" is bfloat16 on the CPU and float16 on CUDA.

    what: the setting's name, for the error message.
    """
    if precision == "auto":
        precision = "fp16" if torch.device(device).type == "cuda" else "bf16"
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ValueError(f"{what} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return dtypes[precision]


def autocast_context(precision: str, device: torch.device, what: str = "precision"):
    """A context running matrix products and convolutions in the chosen precision.

    Everything that decodes boxes, ranks scores or thresholds masks stays float32: the
    heads hand their outputs back as float32.
    """
    device = torch.device(device)
    dtype = autocast_dtype(precision, device, what)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
