"""TIFF files -> their pixels with tifffile, as `images.load_image` gives them.

A TIFF's pages or channels become the image's channels (`_channels_last`). Its colours are
those PIL and image viewers show: a palette applied through its colour map (not in ImageJ
files, whose LUT only displays the data), MinIsWhite inverted, CMYK as RGB, an alpha sample
dropped, the Orientation tag applied. A compression tifffile cannot decode without the
optional 'imagecodecs' package raises `CodecMissing`, for the caller to read the file with PIL.
"""

import contextlib
import logging
import math
import threading
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

# A size check: (width, height, planes) from an image's header -> None, or it raises to refuse
# the image before its pixels are decoded.
SizeCheck = Callable[[int, int, int], None]

MINISWHITE, PALETTE, SEPARATED = 0, 3, 5  # TIFF Photometric values
ALPHA_SAMPLES = (1, 2)  # ExtraSamples: associated (premultiplied) and unassociated alpha
INKSET_MULTI = 2  # InkSet: inks other than CMYK
ORIENTATION_TAG, INKSET_TAG = 274, 332


class CodecMissing(ValueError):
    """tifffile cannot decode this TIFF (its compression, predictor, 4-bit samples, ...)
    without the optional 'imagecodecs' package. The message says what it needs."""

    def __init__(self, message: str, frames: int, imagej: bool, photometric: int):
        super().__init__(message)
        self.frames = frames  # how many pages make the image
        self.imagej = imagej
        self.photometric = photometric


class _Layout(NamedTuple):
    """What the header says of the image: the first series' key page's tags, read while the
    file is open (tifffile reads some tag values only when asked)."""

    series: list  # the series that make the image
    axes: str  # e.g. "YXS", "IYX", "ZCYX"
    shape: tuple[int, ...]
    imagej: bool
    photometric: int
    colormap: np.ndarray | None  # (3, 2**bits) uint16
    extrasamples: tuple[int, ...]
    bitspersample: int
    cmyk: bool  # InkSet CMYK (the default), not other inks
    orientation: int


def decode_tiff(source, check_size: SizeCheck, colours: bool = True) -> np.ndarray:
    """Pixels of a TIFF (a path or a binary file object), its pages or channels as the image's
    channels, checked by `check_size` from the header before anything is decoded; colours
    False: the stored values, without the photometric conversions (a label image's). What
    `check_size` raises passes as it is; tifffile's many errors of a corrupt file become
    ValueError, with what tifffile logged; CodecMissing when it needs 'imagecodecs'."""
    import tifffile

    with _tifffile_log() as log:
        with _failures_as_value_errors(log):
            tiff = tifffile.TiffFile(source)
        with tiff:
            with _failures_as_value_errors(log):
                layout = _layout(tiff)
            axes, shape = layout.axes, layout.shape
            check_size(shape[axes.index("X")], shape[axes.index("Y")], _planes(axes, shape))
            with _failures_as_value_errors(log):
                array = _decoded(layout)
    for message in log:  # the file was read: what tifffile noted is a warning
        warnings.warn(f"tifffile: {message}", UserWarning, stacklevel=2)
    return _as_image(native_byte_order(array), layout, colours)


@contextlib.contextmanager
def _tifffile_log():
    """What tifffile logs in this thread while reading, as a list of one-line messages, kept
    from the log: a line of its own, naming no file, would say nothing in a folder of images.
    A filter on tifffile's logger, for this thread only: other threads' reads log as they do."""
    messages: list[str] = []
    thread = threading.get_ident()

    def keep(record: logging.LogRecord) -> bool:
        if record.thread != thread:
            return True
        messages.append(" ".join(record.getMessage().split()))
        return False

    logger = logging.getLogger("tifffile")
    logger.addFilter(keep)
    try:
        yield messages
    finally:
        logger.removeFilter(keep)


@contextlib.contextmanager
def _failures_as_value_errors(log: list[str]):
    try:
        yield
    except (FileNotFoundError, CodecMissing):
        raise
    except Exception as error:  # a corrupt file fails in many ways inside tifffile
        said = f"; tifffile: {'; '.join(log)}" if log else ""
        raise ValueError(f"{type(error).__name__}: {error}{said}") from None


def _layout(tiff) -> _Layout:
    """The series that make the image, and its axes and shape, from the header alone.

    Pages written one at a time are series of their own: those shaped like the first series
    are further planes of it, stacked on an "I" axis (a thumbnail of another size is not).
    """
    if not tiff.series:
        raise ValueError("no image in the file")
    first = tiff.series[0]
    key = (first.axes, first.shape, first.dtype, first.keyframe.photometric)
    series = [s for s in tiff.series if (s.axes, s.shape, s.dtype, s.keyframe.photometric) == key]
    axes, shape = first.axes, tuple(first.shape)
    if len(series) > 1:
        axes, shape = "I" + axes, (len(series), *shape)
    if "Y" not in axes or "X" not in axes:
        raise ValueError(f"its first series has axes {axes!r} (shape {shape}), no Y and X")
    page = first.keyframe
    return _Layout(
        series,
        axes,
        shape,
        bool(tiff.is_imagej),
        int(page.photometric),
        page.colormap,
        tuple(int(kind) for kind in page.extrasamples),
        int(page.bitspersample),
        page.tags.valueof(INKSET_TAG) != INKSET_MULTI,
        page.tags.valueof(ORIENTATION_TAG) or 1,
    )


def _planes(axes: str, shape: tuple[int, ...]) -> int:
    """How many width x height planes a TIFF image holds: pages, Z, C, T, ... multiplied.

    An RGB(A) pixel counts as one pixel, as PIL counts them; more samples per pixel count as planes.
    """
    samples = math.prod(n for axis, n in zip(axes, shape) if axis == "S")
    others = math.prod(n for axis, n in zip(axes, shape) if axis not in "YXS")
    return others * (samples if samples > 4 else 1)


def _decoded(layout: _Layout) -> np.ndarray:
    """The image's series decoded, or CodecMissing if tifffile needs 'imagecodecs' for them:
    known from the header for a compression or predictor, from tifffile's error for the rest
    (2-, 4- or 12-bit samples, a reversed bit order, ...)."""
    missing = _missing_codec(layout.series)
    try:
        if missing is None:
            series = layout.series
            return series[0].asarray() if len(series) == 1 else np.stack([s.asarray() for s in series])
    except (ValueError, NotImplementedError) as error:
        if "'imagecodecs'" not in str(error):
            raise
        missing = str(error)
    frames = math.prod(n for axis, n in zip(layout.axes, layout.shape) if axis not in "YXS")
    raise CodecMissing(missing, frames, layout.imagej, layout.photometric)


def _missing_codec(series: list) -> str | None:
    """What of the image tifffile cannot decode without 'imagecodecs' (LZW, JPEG, CCITT G3/G4,
    a floating-point predictor, ...), from the header; None if nothing."""
    from tifffile import COMPRESSION, PREDICTOR, TIFF

    for page in {id(s.keyframe): s.keyframe for s in series}.values():
        if page.compression != 1 and page.compression not in TIFF.DECOMPRESSORS:
            what = f"{_enum_name(COMPRESSION, page.compression)}-compressed TIFF"
        elif page.predictor != 1 and page.predictor not in TIFF.UNPREDICTORS:
            what = f"TIFF of {_enum_name(PREDICTOR, page.predictor)} predictor"
        else:
            continue
        return f"{what}, which tifffile decodes only with the 'imagecodecs' package"
    return None


def _enum_name(kind, value: int) -> str:
    try:
        return kind(value).name
    except ValueError:
        return f"{kind.__name__} {value}"


def _as_image(array: np.ndarray, layout: _Layout, colours: bool = True) -> np.ndarray:
    """The decoded series -> (H, W) or (H, W, C) in the colours viewers show (colours False:
    as stored), oriented as the Orientation tag says."""
    axes = layout.axes
    if "S" in axes:  # samples last, where the colour conversions take them
        array = np.moveaxis(array, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
    if colours:
        array, axes = _viewer_colours(array, axes, layout)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    return apply_orientation(_channels_last(array, axes), layout.orientation)


def _viewer_colours(array: np.ndarray, axes: str, layout: _Layout) -> tuple[np.ndarray, str]:
    """Photometric interpretation applied, samples (S) last: palette -> RGB (not ImageJ's),
    alpha dropped, MinIsWhite inverted, CMYK -> RGB. PIL and viewers show these colours, and
    `load_image` gives PNG and JPEG files' colours the same way."""
    photometric = layout.photometric
    if photometric == PALETTE and layout.colormap is not None and not layout.imagej:
        if axes.endswith("S"):  # an index and extra samples (alpha): the index
            array, axes = array[..., 0], axes[:-1]
        return _through_colormap(array, layout.colormap), axes + "S"
    if axes.endswith("S"):
        array = _without_alpha(array, layout.extrasamples)
        if array.shape[-1] == 1:  # gray and alpha: gray
            array, axes = array[..., 0], axes[:-1]
    if photometric == MINISWHITE and array.dtype.kind in "biu":
        array = _inverted(array, layout.bitspersample)
    if photometric == SEPARATED and layout.cmyk and axes.endswith("S") and array.shape[-1] >= 4:
        array = _cmyk_to_rgb(array)
    return array, axes


def _through_colormap(indices: np.ndarray, colormap: np.ndarray) -> np.ndarray:
    """Palette indices -> uint8 RGB (..., 3). TIFF colour maps are 16-bit; the high byte is
    kept, as PIL does."""
    colours = colormap.shape[1]
    if indices.dtype == bool:
        indices = indices.view(np.uint8)
    if indices.dtype.kind != "u":
        raise ValueError(f"palette indices of type {indices.dtype}")
    if indices.size and indices.max() >= colours:
        raise ValueError(f"palette index {indices.max()} outside its colour map of {colours} colours")
    return (colormap.T >> 8).astype(np.uint8)[indices]


def _without_alpha(samples: np.ndarray, extras: tuple[int, ...]) -> np.ndarray:
    """Samples (..., S) without the ExtraSamples marked alpha; unspecified extra samples (a
    fourth channel of data) stay."""
    colour = samples.shape[-1] - len(extras)
    if colour < 1:
        return samples
    keep = list(range(colour)) + [colour + i for i, kind in enumerate(extras) if kind not in ALPHA_SAMPLES]
    return samples if len(keep) == samples.shape[-1] else samples[..., keep]


def _inverted(array: np.ndarray, bits: int) -> np.ndarray:
    """MinIsWhite values as MinIsBlack: the maximum (of the type, or of `bits` per sample for
    a 12-bit image in uint16) minus the value."""
    if array.dtype == bool:
        return ~array
    if array.dtype.kind == "i":
        return ~array  # -1 - value: the type's range mirrored, where max - value would overflow
    top = (1 << bits) - 1 if bits < array.dtype.itemsize * 8 else np.iinfo(array.dtype).max
    return (top - np.minimum(array, top)).astype(array.dtype)


def _cmyk_to_rgb(samples: np.ndarray) -> np.ndarray:
    """CMYK samples (..., 4 + extras) -> RGB, as PIL converts CMYK: R = (max - C)(max - K)/max,
    rounded; extra samples stay. Integers of 8 or 16 bits, as CMYK is written."""
    if samples.dtype not in (np.uint8, np.uint16):
        return samples
    top = int(np.iinfo(samples.dtype).max)
    ink = samples[..., :4].astype(np.uint32)  # (2**16 - 1)**2 + top // 2 fits 32 bits
    rgb = ((top - ink[..., :3]) * (top - ink[..., 3:]) + top // 2) // top
    return np.concatenate([rgb.astype(samples.dtype), samples[..., 4:]], axis=-1)


def _channels_last(array: np.ndarray, axes: str) -> np.ndarray:
    """A TIFF series of `axes` (e.g. "YXS", "CYX", "ZCYX", "QYXS") -> (H, W) or (H, W, C).

    Every axis but Y and X becomes channels: the samples axis S (RGB) first, then the others
    (pages, Z, C, T, ...) in the file's order, flattened; axes of length 1 are already gone.
    """
    order = [axes.index("Y"), axes.index("X")]
    order += [i for i, axis in enumerate(axes) if axis == "S"]
    order += [i for i, axis in enumerate(axes) if axis not in "YXS"]
    array = array.transpose(order)
    if array.ndim == 2:
        return array
    return array.reshape(array.shape[0], array.shape[1], -1)


# TIFF/EXIF Orientation -> the (H, W, ...) array as displayed, as PIL's ImageOps.exif_transpose
_ORIENTED = {
    2: lambda a: a[:, ::-1],  # mirrored
    3: lambda a: a[::-1, ::-1],  # turned 180 degrees
    4: lambda a: a[::-1],  # flipped
    5: lambda a: a.swapaxes(0, 1),  # transposed
    6: lambda a: np.rot90(a, -1),  # turned 90 degrees clockwise
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],  # transversed
    8: lambda a: np.rot90(a),  # turned 90 degrees counter-clockwise
}


def apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """A channels-last (H, W) or (H, W, C) array, of any channel count, as the TIFF or EXIF
    Orientation value says it is displayed (values 2 to 8; others leave it as it is)."""
    turn = _ORIENTED.get(orientation)
    return array if turn is None else np.ascontiguousarray(turn(array))


def native_byte_order(array: np.ndarray) -> np.ndarray:
    # Big-endian TIFF or "I;16B" PNG pixels: torch reads native byte order only.
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))
