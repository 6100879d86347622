"""Intensity normalization: pixel values of any type -> the [0, 1] floats the model's input is.

Photographs fill their 8-bit range, so dividing by 255 ("range") is right for them. Scientific
cameras are 12- or 16-bit and fill a small part of that range: a nucleus at 230 of 65535 would
be black after "range". For them each image, and each channel of it (every stain is its own
channel), is mapped from its own low and high values to [0, 1]: "minmax" takes the extremes,
"percentile" (what microscopy tools do) the 1st and 99.8th percentiles by default, so that a
few hot pixels do not decide the scale.

`normalize_channels` is what the model's ONNX graph runs too: written with sort and gather on
shapes read from the tensor, so tracing it gives a graph for any image size.
"""

import torch
from torch import Tensor

from maskrcnn.choices import INTENSITIES, PER_IMAGE  # noqa: F401  (re-exported)


def normalize_channels(image: Tensor, method: str, percentiles: tuple[float, float] = (1.0, 99.8)) -> Tensor:
    """image (C, H, W) float -> (C, H, W) of the same dtype in [0, 1], channel by channel.

    method "minmax": each channel's minimum -> 0 and maximum -> 1; "percentile": its `low` and
    `high` percentiles (numpy's default linear interpolation) -> 0 and 1, clipped. A channel
    whose two values are equal (a constant channel) becomes zeros.
    """
    flat = image.flatten(1)  # (C, H*W)
    if method == "minmax":
        low, high = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
    elif method == "percentile":
        low, high = channel_percentiles(flat, percentiles).unbind(dim=1)
        low, high = low[:, None], high[:, None]
    else:
        raise ValueError(f"no per-image normalization called {method!r}; expected one of {PER_IMAGE}")
    span = high - low  # (C, 1)
    flat_channel = span > 0
    safe_span = torch.where(flat_channel, span, torch.ones_like(span))
    scaled = ((flat - low) / safe_span).clamp(0.0, 1.0) * flat_channel.to(flat.dtype)
    return scaled.reshape_as(image)


def channel_percentiles(flat: Tensor, percentiles: tuple[float, float]) -> Tensor:
    """flat (C, N) -> (C, 2): each row's two percentiles, as np.percentile(row, percentiles).

    numpy's "linear" method: the q-th percentile of n sorted values sits at position
    q / 100 * (n - 1); between two neighbours it interpolates, from the nearer one.
    """
    ordered = flat.sort(dim=1).values
    count = torch._shape_as_tensor(flat)[1:]  # (1,) int64; a graph value under tracing
    # Positions in float64 as numpy computes them: float32 would round them at a few million pixels.
    fractions = torch.tensor([percentiles[0] / 100.0, percentiles[1] / 100.0], dtype=torch.float64)
    position = (count - 1).to(torch.float64) * fractions  # (2,)
    below = position.floor()
    weight = (position - below).to(flat.dtype)  # (2,)
    below_index = below.to(torch.int64)
    above_index = torch.minimum(below_index + 1, count - 1)
    lower = ordered.index_select(1, below_index)  # (C, 2)
    upper = ordered.index_select(1, above_index)
    step = upper - lower
    # From the nearer neighbour, as numpy does, so the result never leaves [lower, upper].
    return torch.where(weight >= 0.5, upper - step * (1 - weight), lower + step * weight)
