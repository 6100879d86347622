"""One switch for every place where this project replaces a PyTorch op by a faster equivalent.

The fast paths compute what the plain ops compute, up to float rounding, and are tested
against them one by one. When a number comes out wrong anyway, turning them all off gives
the plain-PyTorch model (PyTorch and torchvision ops only), so the difference can be
bisected to "one of our tricks" or "the model itself". Off, they are:

- modeling/norm.py, `conv_norm`: a frozen BatchNorm folded into the convolution's weights
  (and those weights cached within an inference pass) -> `norm(conv(x))`.
- modeling/norm.py, `GroupNorm`: the channels-last backward for narrow maps -> F.group_norm.
- ops/conv.py, `conv2d`: the matrix-product weight gradient -> F.conv2d.
- ops/roi_align.py, `roi_align` / `roi_align_rows`: our gather-sum RoIAlign ->
  torchvision.ops.roi_align (same outputs' shapes and memory layout).
- ops/roi_variants.py, the max kinds: each sample by our gather-sum -> a plain gather and sum
  (RoIWarp averaging is RoIAlign on rounded RoIs, so it follows RoIAlign's switch).
- ops/layout.py, `dense_gradient`: the dense-gradient copy -> identity.

maskrcnn.fast_paths(False)                 # off from here on
with maskrcnn.fast_paths(False):           # off inside the block, restored after it
    ...

The switch starts from the environment variable MASKRCNN_FAST_PATHS ("0", "false" or "off"
turn it off; unset, empty, "1", "true" or "on" leave it on), read at the first use. It is
read when an op runs, not when a model is built: a model built with the fast paths on runs
without them inside the block. It is one process-wide value, not per thread.

This module imports nothing from torch: the command line checks the environment variable
with its other inputs, before any work (`check_environment`).
"""

import os

ENVIRONMENT_VARIABLE = "MASKRCNN_FAST_PATHS"
_ON = ("1", "true", "on")
_OFF = ("0", "false", "off")

_enabled: bool | None = None  # None: not read from the environment yet


def _from_environment() -> bool:
    raw = os.environ.get(ENVIRONMENT_VARIABLE)
    value = "" if raw is None else raw.strip().lower()
    if value in ("", *_ON):
        return True
    if value in _OFF:
        return False
    accepted = ", ".join(repr(v) for v in (*_ON, *_OFF))
    raise ValueError(
        f"environment variable {ENVIRONMENT_VARIABLE}={raw!r} is not understood: "
        f"use one of {accepted} (or leave it unset, which turns the fast paths on)"
    )


def check_environment() -> None:
    """Raise the ValueError of a malformed MASKRCNN_FAST_PATHS now, not at the first op."""
    _from_environment()


def fast_paths_enabled() -> bool:
    """Whether the fast paths run (True) or the plain PyTorch/torchvision ops (False)."""
    global _enabled
    if _enabled is None:
        _enabled = _from_environment()
    return _enabled


class _Restore:
    """What `fast_paths` returns: used as a context manager, it restores the value the
    switch had before that call when the block exits."""

    def __init__(self, previous: bool):
        self.previous = previous

    def __enter__(self) -> "_Restore":
        return self

    def __exit__(self, *exc_info) -> None:
        global _enabled
        _enabled = self.previous

    def __repr__(self) -> str:
        return f"fast_paths({fast_paths_enabled()}), previously {self.previous}"


def fast_paths(enabled: bool) -> _Restore:
    """Turn the fast paths on or off, at once; used in a `with` statement, only for its block.

    Raises TypeError for anything but a bool (a string "0" would otherwise mean on), and the
    ValueError of a malformed MASKRCNN_FAST_PATHS, which is read here for the value to restore.
    """
    global _enabled
    if not isinstance(enabled, bool):
        raise TypeError(f"fast_paths() takes True or False, got {enabled!r}")
    previous = fast_paths_enabled()
    _enabled = enabled
    return _Restore(previous)
