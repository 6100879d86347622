"""One switch for every place where this project replaces a PyTorch op by a faster equivalent.

The fast paths compute what the plain ops compute, up to float rounding, and are tested
against them one by one. When a number comes out wrong anyway, turning them all off gives
the plain-PyTorch model (PyTorch and torchvision ops only), so the difference can be
bisected to "one of our tricks" or "the model itself". `FAST_PATHS` lists every one, with
what it becomes when they are off; each counts its runs (`ran`), so that a test can see that
it ran (`counting`) and compare its outputs and gradients with the plain op's.

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

import contextlib
import os
from collections import Counter

# Every fast path: its name -> where it is, and what runs instead when the switch is off.
FAST_PATHS = {
    "conv_weight_gradient": "ops/conv.py conv2d: the weight gradient as matrix products -> F.conv2d's",
    "frozen_norm_fold": "modeling/norm.py conv_norm: a frozen BatchNorm folded into the convolution's "
    "weights, cached within an inference pass -> norm(conv(x))",
    "group_norm_backward": "modeling/norm.py GroupNorm: the channels-last backward of narrow maps "
    "-> F.group_norm",
    "roi_align": "ops/roi_align.py roi_align / roi_align_rows: gather-sum RoIAlign "
    "-> torchvision.ops.roi_align (RoIWarp averaging follows it)",
    "roi_sample_gather": "ops/roi_variants.py, the max kinds: each sample by gather-sum "
    "-> a plain gather and sum",
    "dense_gradient": "ops/layout.py dense_gradient: the gradient copied dense -> as autograd makes it",
    "rpn_fused_predictors": "modeling/rpn.py RPNHead: the two 1x1 predictors as one convolution "
    "-> two convolutions",
    "box_fc6_channels_last": "modeling/box_head.py box_features: fc6 on (S, S, C) features "
    "-> on (C, S, S) features with the weight reordered",
    "mask_labelled_class_only": "modeling/mask_head.py class_logits: the labelled class's mask only "
    "-> every class's, then indexed",
    "mask_upsample_product": "modeling/mask_head.py mask_features: the 2x2 deconvolution as one "
    "matrix product -> nn.ConvTranspose2d",
}

_counters: list[Counter] = []  # one per open `counting` block

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


def ran(name: str) -> None:
    """Count one run of the fast path `name` (a key of FAST_PATHS) for the open `counting` blocks."""
    if name not in FAST_PATHS:
        raise KeyError(f"{name!r} is not a fast path; FAST_PATHS lists {', '.join(FAST_PATHS)}")
    for counter in _counters:
        counter[name] += 1


@contextlib.contextmanager
def counting():
    """`with counting() as runs:` -> a Counter of the fast paths that ran inside the block."""
    runs: Counter = Counter()
    _counters.append(runs)
    try:
        yield runs
    finally:
        _counters.remove(runs)
