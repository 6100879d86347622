"""Turning what users pass as an image into a checked (3, H, W) float RGB tensor in [0, 1]."""

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

SUPPORTED = "a torch.Tensor (3, H, W), a numpy array (H, W, 3) or a PIL.Image"


def to_image_tensor(image, name: str = "image") -> Tensor:
    """Convert one image to a (3, H, W) float32 RGB tensor in [0, 1], or raise ValueError.

    Accepts float tensors (3, H, W) in [0, 1], uint8 tensors (3, H, W), numpy arrays
    (H, W, 3) of uint8 (or float in [0, 1]), 2-D grayscale arrays/tensors, and PIL images
    of any mode. `name` is used in error messages (e.g. "images[2]" or a file name).
    """
    if isinstance(image, Image.Image):
        tensor = torch.from_numpy(pil_to_rgb_array(image)).permute(2, 0, 1)
    elif isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3:
            raise ValueError(f"{name}: numpy image must be (H, W, 3), got shape {image.shape}")
        if image.dtype.kind not in "uif":
            raise ValueError(f"{name}: unsupported pixel type {image.dtype}")
        # A copy: the caller keeps its array, and read-only arrays need one anyway.
        tensor = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)
    elif isinstance(image, Tensor):
        tensor = image[None] if image.dim() == 2 else image
        if tensor.dim() != 3:
            raise ValueError(f"{name}: tensor image must be (3, H, W), got shape {tuple(image.shape)}")
    else:
        raise ValueError(f"{name}: unsupported image type {type(image).__name__}; expected {SUPPORTED}")

    channels, height, width = tensor.shape
    if channels == 1:
        tensor = tensor.expand(3, -1, -1)
    elif channels != 3:
        raise ValueError(
            f"{name}: expected 3 color channels (RGB) or 1 (grayscale), got {channels} "
            f"(shape {tuple(tensor.shape)}); convert RGBA or other formats to RGB first"
        )
    if height == 0 or width == 0:
        raise ValueError(f"{name}: image is empty ({height}x{width} pixels)")
    return _to_unit_float(tensor, name)


def _to_unit_float(tensor: Tensor, name: str) -> Tensor:
    if tensor.dtype == torch.uint8:
        return tensor.float().div_(255)
    if tensor.dtype == torch.bool or not (tensor.is_floating_point() or tensor.dtype in _INTEGER_RANGES):
        raise ValueError(f"{name}: unsupported pixel type {tensor.dtype}")
    if tensor.dtype in _INTEGER_RANGES:
        return tensor.float().div_(_INTEGER_RANGES[tensor.dtype])
    tensor = tensor.float()
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name}: image contains NaN or infinite values")
    low, high = tensor.min().item(), tensor.max().item()
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(
            f"{name}: float pixel values must be in [0, 1], got [{low:g}, {high:g}]"
            + ("; divide 8-bit values by 255" if high <= 255 else "")
        )
    return tensor.clamp(0, 1)


_INTEGER_RANGES = {torch.int16: 65535.0, torch.int32: 65535.0, torch.uint16: 65535.0}


def pil_to_rgb_array(image: Image.Image) -> np.ndarray:
    """A PIL image of any mode -> (H, W, 3) uint8 RGB, honouring EXIF orientation.

    16-bit and 32-bit integer images are scaled to 8 bits by their full range; alpha is
    dropped (composited on black); palette images are expanded.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        scale = 65535.0 if image.mode.startswith("I") else max(values.max(), 1.0)
        gray = np.clip(values / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.array(image.convert("RGB"))


def load_image(path) -> Tensor:
    """Read an image file -> (3, H, W) float RGB in [0, 1]. Raises ValueError naming the file."""
    try:
        with Image.open(path) as image:
            image.load()
            array = pil_to_rgb_array(image)
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"{path}: cannot read image ({error})") from None
    return to_image_tensor(array, str(path))
