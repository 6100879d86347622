"""Photometric jitter on the normalised image: brightness, contrast and gamma.

It works on the model's input (C, H, W) float in [0, 1] after `data.intensity` has
normalised the file's values, so 8-bit, 16-bit and N-channel images all get it, every channel
the same change (a channel's meaning, say a nuclear stain, is kept).
"""

import torch
from torch import Tensor

from maskrcnn.data.transforms import Target


class RandomPhotometric:
    """With strength s: brightness + b, b in [-s/2, s/2]; contrast about the image's mean by a
    factor in [1 - s, 1 + s]; gamma x ** g, g in [1 / (1 + s), 1 + s]; each drawn uniformly,
    all three applied, the result clamped to [0, 1]. s = 0 changes nothing (and still draws,
    so that later transforms' draws do not depend on s)."""

    def __init__(self, strength: float):
        if not 0.0 <= strength < 1.0:
            raise ValueError(f"photometric strength must be in [0, 1), got {strength}")
        self.strength = float(strength)

    def __call__(self, image: Tensor, target: Target, generator: torch.Generator | None = None):
        u = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
        if self.strength == 0.0:
            return image, target
        s = self.strength
        brightness = s * (u[0] - 0.5)
        contrast = 1.0 + s * (2.0 * u[1] - 1.0)
        # log-uniform between 1 / (1 + s) and 1 + s: brighter and darker equally likely
        gamma = (1.0 + s) ** (2.0 * u[2] - 1.0)
        # in float64: a float32 sum's rounding depends on the threads, and a sample must not
        # depend on the worker it was made in
        mean = float(image.double().mean())
        image = ((image - mean) * contrast + mean + brightness).clamp(0.0, 1.0)
        return image.pow(gamma), target

    def __repr__(self) -> str:
        return f"RandomPhotometric(strength={self.strength})"
