"""Image files and user images -> the model's input: (C, H, W) float32 in [0, 1].

`load_image` returns a file's pixels at full precision (a 16-bit image stays 16-bit);
`to_image_tensor` checks what a user or a file gives and normalizes its intensities as the
model's `InputConfig` says (data/intensity.py). Training, `eval`, `predict`, `model.predict`
all go through both, so every path sees the same pixels.
"""

import contextlib
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from maskrcnn.config import DataConfig, InputConfig
from maskrcnn.config.validate import check_input_config
from maskrcnn.data.intensity import normalize_channels
from maskrcnn.data.tiff import MINISWHITE, CodecMissing, SizeCheck, decode_tiff, native_byte_order

SUPPORTED = "a torch.Tensor (C, H, W), a numpy array (H, W, C) or (H, W), or a PIL.Image"
TIFF_SUFFIXES = (".tif", ".tiff")
DEFAULT_MAX_IMAGE_PIXELS = DataConfig.max_image_pixels
# Floats this close to [0, 1] are taken as [0, 1] images (rounding in the user's own scaling).
UNIT_TOLERANCE = 1e-3


class ImageTooLargeError(ValueError):
    """An image file's header claims more pixels than the limit (a decompression bomb?)."""


class UnsupportedImageError(ValueError):
    """An image file of a kind no decoder here reads right (a 16-bit colour PNG, ...)."""


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour types PIL decodes at 8 bits only when they hold 16 bits per sample
PNG_16_BIT_COLOUR = {2: "RGB", 4: "gray+alpha", 6: "RGBA"}


class _Pixels(NamedTuple):
    values: Tensor  # (C, H, W) float32, or float64 for types float32 cannot hold exactly
    dtype: str  # the type the user's pixels had, e.g. "uint16"
    maximum: float | None  # the largest value of an integer type; None for floats
    shape: tuple  # the shape as the user passed it, for messages


def to_image_tensor(image, config: InputConfig, name: str = "image") -> Tensor:
    """One image -> (config.channels, H, W) float32 in [0, 1], or raise ValueError naming `name`.

    image: numpy (H, W) or (H, W, C), torch (C, H, W) or (H, W), or a PIL image; any integer
    or float type. Intensities are normalized per `config.intensity` ("auto" resolves by type:
    uint8 -> "range", other integers -> "percentile", floats in [0, 1] as they are, other
    floats -> "percentile"). A 1-channel image on a model of more channels is repeated.
    `name` is used in error messages (e.g. "images[2]" or a file name).
    """
    check_input_config(config)
    pixels = _checked_pixels(image, config.channels, name)
    normalized = _normalize(pixels, config, name).float()
    return normalized.expand(config.channels, -1, -1).contiguous()


def to_raw_tensor(image, channels: int, name: str = "image") -> Tensor:
    """One image -> (channels, H, W) float32 of its pixel values as they are (no normalization).

    What an exported graph that normalizes intensities itself ("minmax", "percentile") takes.
    The checks and the channel handling are those of `to_image_tensor`.
    """
    values = _checked_pixels(image, channels, name).values.float()
    return values.expand(channels, -1, -1).contiguous()


def _checked_pixels(image, channels: int, name: str) -> _Pixels:
    pixels = _channels_first(image, name)
    count, height, width = pixels.values.shape
    if count not in (1, channels):
        hint = f"; for {count}-channel images, train a model with model.input.channels={count}"
        if count == channels + 1 and channels in (1, 3):
            # Files are read without their alpha: only an array can still have one.
            hint += " (or, for an array with alpha, drop its alpha channel)"
        raise ValueError(
            f"{name}: image has {count} channels (shape {pixels.shape}) but the model takes "
            f"{channels} (model.input.channels), or 1 (repeated){hint}"
        )
    if height == 0 or width == 0:
        raise ValueError(f"{name}: image is empty ({height}x{width} pixels)")
    return pixels


def _channels_first(image, name: str) -> _Pixels:
    if isinstance(image, Image.Image):
        image = pil_to_array(image)
    if isinstance(image, np.ndarray):
        shape = tuple(image.shape)
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3:
            raise ValueError(f"{name}: numpy image must be (H, W, 3), (H, W, C) or (H, W), got shape {shape}")
        if image.dtype.kind not in "uif":
            raise ValueError(f"{name}: unsupported pixel type {image.dtype}")
        # float32 holds every 8- and 16-bit value exactly; wider types are normalized in float64.
        exact = image.dtype.itemsize <= 2 or image.dtype == np.float32
        maximum = float(np.iinfo(image.dtype).max) if image.dtype.kind in "ui" else None
        # A copy: the caller keeps its array, and read-only arrays need one anyway.
        values = np.array(image.transpose(2, 0, 1), dtype=np.float32 if exact else np.float64, order="C")
        return _Pixels(torch.from_numpy(values), str(image.dtype), maximum, shape)
    if isinstance(image, Tensor):
        shape = tuple(image.shape)
        tensor = image[None] if image.dim() == 2 else image
        if tensor.dim() != 3:
            raise ValueError(
                f"{name}: tensor image must be (3, H, W), (C, H, W) or (H, W), got shape {shape}"
            )
        if tensor.dtype == torch.bool or tensor.is_complex():
            raise ValueError(f"{name}: unsupported pixel type {tensor.dtype}")
        dtype = str(tensor.dtype).removeprefix("torch.")
        if tensor.is_floating_point():
            wide = tensor.dtype == torch.float64
            return _Pixels(tensor.to(torch.float64 if wide else torch.float32), dtype, None, shape)
        exact = tensor.element_size() <= 2
        values = tensor.to(torch.float32 if exact else torch.float64)
        return _Pixels(values, dtype, float(torch.iinfo(tensor.dtype).max), shape)
    raise ValueError(f"{name}: unsupported image type {type(image).__name__}; expected {SUPPORTED}")


def _normalize(pixels: _Pixels, config: InputConfig, name: str) -> Tensor:
    values = pixels.values
    if pixels.maximum is None and not torch.isfinite(values).all():
        raise ValueError(f"{name}: image contains NaN or infinite values")
    method = config.intensity
    if method == "auto":
        method = _auto_intensity(pixels)
    if method != "range":
        return normalize_channels(values, method, config.percentiles)
    if pixels.maximum is not None:
        low = 0.0 if pixels.dtype.startswith("uint") else values.min().item()
        if low < 0:
            raise ValueError(
                f"{name}: {pixels.dtype} image has negative values (minimum {low:g}); intensity 'range' "
                f"divides by the type's maximum ({pixels.maximum:g}) and needs values >= 0: set "
                "model.input.intensity to 'minmax' or 'percentile'"
            )
        return values / pixels.maximum
    low, high = (v.item() for v in torch.aminmax(values))
    if low < -UNIT_TOLERANCE or high > 1 + UNIT_TOLERANCE:
        raise ValueError(
            f"{name}: float pixel values must be in [0, 1], got [{low:g}, {high:g}]"
            + ("; divide 8-bit values by 255" if high <= 255 else "")
            + ", or set model.input.intensity to 'minmax' or 'percentile'"
        )
    return values.clamp(0, 1)


def _auto_intensity(pixels: _Pixels) -> str:
    """The intensity "auto" stands for: "range" for uint8 and [0, 1] floats, else "percentile".

    A 12- or 16-bit camera fills a small part of its type's range, so dividing by the type's
    maximum would leave its images nearly black: each image is scaled by its own percentiles.
    """
    if pixels.dtype == "uint8":
        return "range"
    if pixels.maximum is not None:
        return "percentile"
    low, high = (v.item() for v in torch.aminmax(pixels.values))
    return "range" if low >= -UNIT_TOLERANCE and high <= 1 + UNIT_TOLERANCE else "percentile"


def pil_to_array(image: Image.Image) -> np.ndarray:
    """A PIL image -> its pixels, (H, W) or (H, W, 3), honouring EXIF orientation.

    Types are kept: 8-bit modes give uint8, "I;16*" uint16, "I" int32, "F" float32. Palette
    and alpha images become RGB (alpha dropped), gray with alpha and bilevel ones gray.
    (A 16-bit colour PNG is 8-bit once PIL has opened it: `read_with_pil` refuses those.)
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("1", "LA", "La"):
        image = image.convert("L")
    elif not (image.mode in ("L", "RGB", "I", "F") or image.mode.startswith("I;16")):
        image = image.convert("RGB")
    return native_byte_order(np.array(image))


def load_image(path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, colours: bool = True) -> np.ndarray:
    """An image file's pixels, (H, W) or (H, W, C), in the file's own type (no 8-bit step);
    colours False: a TIFF's stored values, without its photometric conversions (label images).

    PNG, JPEG, BMP, WebP, ... are read by PIL (see `pil_to_array`; a 16-bit colour PNG is
    refused); .tif/.tiff by tifffile, whose pages or channels become the image's channels
    (see `read_tiff`). An image whose header claims more than `max_pixels` pixels (width x
    height x planes; 0: no limit) is refused with ImageTooLargeError before anything is decoded.
    Raises ValueError naming the file for a missing, unreadable or too large image; warnings
    of the decoders (PIL's corrupt EXIF, ...) are re-issued naming the file.
    """
    path = Path(path)
    try:
        with _warnings_naming(path):
            if path.suffix.lower() in TIFF_SUFFIXES:
                return _read_tiff(path, max_pixels, colours)
            return _read_with_pil(path, max_pixels)
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    except ImageTooLargeError as error:
        if str(error).startswith(str(path)):  # ours, which names the file
            raise
        raise ImageTooLargeError(f"{path}: {error}") from None
    except UnsupportedImageError as error:
        raise UnsupportedImageError(f"{path}: {error}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"{path}: cannot read image ({error})") from None


@contextlib.contextmanager
def _warnings_naming(path: Path):
    """Warnings raised while reading `path` (PIL's "Corrupt EXIF data", what tifffile logged)
    re-issued as one line that names the file: alone they do not say which of a folder's
    images they are about. (catch_warnings is process-wide: loading runs in one thread.)"""
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            yield
    finally:
        for warning in caught:
            message = " ".join(str(warning.message).split())
            warnings.warn(f"{path}: {message}", warning.category, stacklevel=4)


def _read_with_pil(path: Path, max_pixels: int) -> np.ndarray:
    return read_with_pil(path, lambda w, h, planes: check_image_size(path, w, h, planes, max_pixels))


def _read_tiff(path: Path, max_pixels: int, colours: bool = True) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(path)
    return read_tiff(path, lambda w, h, planes: check_image_size(path, w, h, planes, max_pixels), colours)


def read_with_pil(source, check_size: SizeCheck) -> np.ndarray:
    """Pixels of an image PIL reads (a path or a binary file object), checked by `check_size`
    from the header before anything is decoded. A 16-bit RGB, RGBA or gray+alpha PNG is
    refused (UnsupportedImageError): PIL would keep only the high byte of each sample.

    PIL's own decompression-bomb guard (`PIL.Image.MAX_IMAGE_PIXELS`, process-wide) stays as
    the program set it: an image over it is refused with a message that says so. The
    `maskrcnn` command line and server, whose every read is checked here, switch it off once
    at start (`cli.leave_size_limits_to_maskrcnn`).
    """
    head = _first_bytes(source, 26)
    with _open_with_pil(source) as image:
        width, height = image.size  # from the header: nothing is decoded yet
        check_size(width, height, 1)
        if image.format == "PNG":
            _refuse_16_bit_colour_png(head)
        image.load()
        return pil_to_array(image)


def _open_with_pil(source) -> Image.Image:
    try:
        return Image.open(source)
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(
            f"{error} (PIL's limit, PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}: raise it in "
            "your program, or use the maskrcnn command line, which applies its own limit only)"
        ) from None


def _first_bytes(source, count: int) -> bytes:
    """The first `count` bytes of a path, or of a file object from where it stands (left there)."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as file:
            return file.read(count)
    start = source.tell()
    head = source.read(count)
    source.seek(start)
    return head


def _refuse_16_bit_colour_png(head: bytes) -> None:
    """PIL has no 16-bit colour mode: it opens a 16-bit RGB, RGBA or gray+alpha PNG as 8-bit,
    keeping the high byte (3000 and 3001 both become 11). Bytes 16 to 25 of a PNG are its
    IHDR's width, height, bit depth and colour type. A 16-bit gray PNG is read at 16 bits."""
    if head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR" or len(head) < 26:
        return
    depth, colour = head[24], head[25]
    if depth == 16 and colour in PNG_16_BIT_COLOUR:
        raise UnsupportedImageError(
            f"16-bit {PNG_16_BIT_COLOUR[colour]} PNG: PIL reads only 8 bits of a 16-bit colour PNG; "
            "save it as a 16-bit TIFF (or an 8-bit PNG)"
        )


def read_tiff(source, check_size: SizeCheck, colours: bool = True) -> np.ndarray:
    """Pixels of a TIFF (a path or a binary file object), its pages or channels as the image's
    channels, in the colours viewers show (`tiff.decode_tiff`), checked by `check_size` from
    the header before anything is decoded. A compression tifffile decodes only with the
    optional 'imagecodecs' package (LZW, JPEG, CCITT G3/G4, ...) is read with PIL instead;
    if PIL cannot either, UnsupportedImageError names the compression. colours False: the
    stored values (`tiff.decode_tiff`; what PIL reads keeps its colours)."""
    start = None if isinstance(source, (str, os.PathLike)) else source.tell()
    try:
        return decode_tiff(source, check_size, colours)
    except CodecMissing as missing:
        if start is not None:
            source.seek(start)
        return _tiff_with_pil(source, missing)


def _tiff_with_pil(source, missing: CodecMissing) -> np.ndarray:
    """A TIFF tifffile cannot decode, read with PIL (its size already checked): its pages
    stacked as `decode_tiff` stacks them, samples first, then pages."""
    try:
        with _open_with_pil(source) as image:
            frames = [_pil_tiff_page(image, index, missing) for index in range(missing.frames)]
            pixels = frames[0] if len(frames) == 1 else np.stack(frames, axis=-1)
    except ImageTooLargeError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise UnsupportedImageError(
            f"{missing}, and PIL cannot read it either ({type(error).__name__}: {error}); "
            "pip install imagecodecs, or save it uncompressed"
        ) from None
    return pixels.reshape(*pixels.shape[:2], -1) if pixels.ndim == 4 else pixels


def _pil_tiff_page(image: Image.Image, index: int, missing: CodecMissing) -> np.ndarray:
    image.seek(index)  # EOFError past the last page
    image.load()  # PIL applies the Orientation tag of a TIFF as it loads it
    if missing.imagej and image.mode == "P":
        return np.array(image)  # an ImageJ LUT only displays the data: the indices are the data
    pixels = pil_to_array(image)
    if missing.photometric == MINISWHITE and image.mode.startswith("I;16"):
        pixels = np.iinfo(pixels.dtype).max - pixels  # PIL inverts MinIsWhite up to 8 bits only
    return pixels


def check_image_size(path, width: int, height: int, planes: int, max_pixels: int) -> None:
    """Raise ImageTooLargeError if width x height x planes exceeds `max_pixels` (0: no limit)."""
    pixels = width * height * planes
    if max_pixels and pixels > max_pixels:
        size = f"{width} x {height} pixels" + (f" x {planes} planes" if planes > 1 else "")
        raise ImageTooLargeError(
            f"{path}: image is {size} ({pixels / 1e6:.1f} megapixels), over the limit of "
            f"{max_pixels / 1e6:g} megapixels; raise data.max_image_pixels (maskrcnn predict: "
            "--max-image-pixels) if the file is genuine"
        )
