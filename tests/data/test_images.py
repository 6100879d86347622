"""Reading image files at full precision and turning images into the model's input."""

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, ImageFile

from maskrcnn.cli.main import leave_size_limits_to_maskrcnn
from maskrcnn.config import InputConfig
from maskrcnn.data.images import (
    ImageTooLargeError,
    load_image,
    pil_to_array,
    read_with_pil,
    to_image_tensor,
    to_raw_tensor,
)

AUTO = InputConfig()
GRAY = InputConfig(channels=1, pixel_mean=(0.5,), pixel_std=(0.25,))


def config(**changes) -> InputConfig:
    channels = changes.get("channels", 3)
    return InputConfig(**{"pixel_mean": (0.5,) * channels, "pixel_std": (0.25,) * channels, **changes})


def contrast(image: torch.Tensor, mask: np.ndarray) -> float:
    """Mean over nuclei minus mean over the background, of channel 0."""
    inside = torch.from_numpy(mask)
    return (image[0][inside].mean() - image[0][~inside].mean()).item()


def old_8_bit_path(values: np.ndarray) -> np.ndarray:
    """What loading did before: divide by 65535 and round to 8 bits."""
    return np.clip(values / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_nuclei_keep_their_precision_and_their_contrast(tmp_path, nuclei_image, suffix):
    values, _, mask = nuclei_image()
    path = tmp_path / f"nuclei{suffix}"
    if suffix == ".png":
        Image.fromarray(values).save(path)
    else:
        tifffile.imwrite(path, values)
    pixels = load_image(path)
    assert pixels.dtype == np.uint16 and pixels.shape == values.shape
    assert np.array_equal(pixels, values)  # every 16-bit value, not 8 bits of them
    assert set(np.unique(old_8_bit_path(values))) <= {0, 1}  # how the nuclei disappeared

    image = to_image_tensor(pixels, AUTO, str(path))  # "auto" -> "percentile" for uint16
    assert image.shape == (3, *values.shape) and image.dtype == torch.float32
    assert contrast(image, mask) > 0.5
    assert len(torch.unique(image[0])) > 20  # graded, not the old two levels
    low, high = np.percentile(values.astype(np.float64), (1.0, 99.8))
    expected = np.clip((values - low) / (high - low), 0, 1)
    np.testing.assert_allclose(image[0].numpy(), expected, atol=1e-6)
    assert torch.equal(image[0], image[2])  # one channel repeated for a 3-channel model
    assert to_image_tensor(pixels, GRAY).shape == (1, *values.shape)


def test_float_tiff_outside_the_unit_range_is_scaled_by_percentiles(tmp_path, nuclei_image):
    values, _, mask = nuclei_image(seed=1)
    tifffile.imwrite(tmp_path / "float.tiff", values.astype(np.float32) * 0.37)
    pixels = load_image(tmp_path / "float.tiff")
    assert pixels.dtype == np.float32
    assert contrast(to_image_tensor(pixels, GRAY), mask) > 0.5


@pytest.mark.parametrize(
    "mode, values, dtype",
    [
        ("I;16", np.arange(120, dtype=np.uint16).reshape(12, 10) * 500, np.uint16),
        ("I;16B", np.arange(120, dtype=np.uint16).reshape(12, 10) * 500, np.uint16),
        ("I", np.arange(120, dtype=np.int32).reshape(12, 10) * 100_000 - 10**6, np.int32),
        ("F", np.linspace(-5, 5e4, 120, dtype=np.float32).reshape(12, 10), np.float32),
    ],
)
def test_high_bit_depth_pil_modes_keep_their_values(mode, values, dtype):
    if mode == "I;16B":  # big-endian, as some PNG and TIFF readers give
        image = Image.frombytes(mode, values.shape[::-1], values.astype(">u2").tobytes())
    else:
        image = Image.fromarray(values)
    assert image.mode == mode
    pixels = pil_to_array(image)
    assert pixels.dtype == dtype and pixels.dtype.isnative
    assert np.array_equal(pixels, values)


def test_range_divides_integers_by_their_types_maximum():
    top = {np.uint8: 255, np.uint16: 65535, np.int16: 32767, np.int32: 2**31 - 1}
    for dtype, maximum in top.items():
        values = np.array([[0, maximum // 2, maximum]], dtype=dtype)
        image = to_image_tensor(values, config(channels=1, intensity="range"))
        torch.testing.assert_close(image[0, 0], torch.tensor([0.0, (maximum // 2) / maximum, 1.0]))
    # uint8 under "auto" is "range": photographs are unchanged by the new default
    photo = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    torch.testing.assert_close(to_image_tensor(photo, AUTO), torch.from_numpy(photo).permute(2, 0, 1) / 255)


def test_negative_int16_is_refused_under_range_and_scaled_otherwise():
    values = np.array([[-300, 0, 1200], [5, 7, 9]], dtype=np.int16)
    with pytest.raises(ValueError) as error:
        to_image_tensor(values, config(channels=1, intensity="range"), "cells.tif")
    message = str(error.value)
    assert message.startswith("cells.tif: ") and "negative" in message and "-300" in message
    assert "minmax" in message and "percentile" in message
    image = to_image_tensor(values, config(channels=1, intensity="minmax"))
    assert image.min() == 0 and image.max() == 1 and image[0, 0, 1] == pytest.approx(300 / 1500)
    assert to_image_tensor(values, config(channels=1)).min() == 0  # auto: percentile


def test_floats_in_0_255_are_refused_under_range_with_the_old_message():
    image = torch.rand(3, 10, 10, generator=torch.Generator().manual_seed(0)) * 255
    with pytest.raises(ValueError, match=r"images\[1\]: float pixel values must be in \[0, 1\]") as error:
        to_image_tensor(image, config(intensity="range"), "images[1]")
    assert "divide 8-bit values by 255" in str(error.value)
    scaled = to_image_tensor(image, AUTO)  # auto: percentile, per channel
    assert scaled.amin(dim=(1, 2)).eq(0).all() and scaled.amax(dim=(1, 2)).eq(1).all()
    unit = torch.rand(3, 4, 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(to_image_tensor(unit, AUTO), unit)  # [0, 1] floats are taken as they are


def test_minmax_and_percentile_work_per_channel():
    rng = np.random.default_rng(0)
    stains = np.stack([rng.normal(200, 10, (20, 30)), rng.normal(9000, 800, (20, 30))], axis=2)
    stains = stains.astype(np.uint16)  # (H, W, 2): two stains of very different brightness
    for intensity in ("minmax", "percentile"):
        image = to_image_tensor(stains, config(channels=2, intensity=intensity))
        assert image.shape == (2, 20, 30)
        assert (image.amin(dim=(1, 2)) == 0).all() and (image.amax(dim=(1, 2)) == 1).all()
        assert 0.3 < image[0].mean() < 0.7 and 0.3 < image[1].mean() < 0.7


def test_a_constant_image_becomes_zeros():
    image = to_image_tensor(np.full((8, 9), 812, dtype=np.uint16), AUTO)
    assert image.shape == (3, 8, 9) and torch.isfinite(image).all() and (image == 0).all()


def test_channel_count_must_match_the_model():
    with pytest.raises(ValueError) as error:
        to_image_tensor(np.zeros((50, 50, 4), dtype=np.uint8), AUTO, "images[0]")
    message = str(error.value)
    assert "(50, 50, 4)" in message and "model.input.channels" in message and "4 channels" in message
    assert message.endswith(
        "for 4-channel images, train a model with model.input.channels=4 "
        "(or, for an array with alpha, drop its alpha channel)"
    )
    with pytest.raises(ValueError, match=r"2 channels \(shape \(2, 20, 20\)\).*takes 1"):
        to_image_tensor(torch.rand(2, 20, 20), GRAY)
    # two stains on an RGB model: no word of RGBA, the setting that takes them
    with pytest.raises(ValueError) as error:
        to_image_tensor(np.zeros((20, 20, 2), dtype=np.uint16), AUTO)
    assert "RGBA" not in str(error.value)
    assert str(error.value).endswith("for 2-channel images, train a model with model.input.channels=2")
    repeated = to_image_tensor(np.arange(20, dtype=np.uint16).reshape(4, 5), config(channels=4))
    assert repeated.shape == (4, 4, 5) and all(torch.equal(c, repeated[0]) for c in repeated)
    assert to_image_tensor(np.zeros((6, 7, 4), dtype=np.uint16), config(channels=4)).shape == (4, 6, 7)


def test_raw_tensor_keeps_values_and_matches_channels():
    values = np.array([[100, 235], [7, 65535]], dtype=np.uint16)
    raw = to_raw_tensor(values, 3)
    assert raw.dtype == torch.float32 and raw.shape == (3, 2, 2)
    assert raw[2].tolist() == [[100.0, 235.0], [7.0, 65535.0]]
    with pytest.raises(ValueError, match="model.input.channels"):
        to_raw_tensor(np.zeros((4, 4, 2), dtype=np.uint16), 3)


def test_multi_page_tiff_gives_its_pages_as_channels(tmp_path):
    pages = np.stack([np.full((6, 8), 100 * (i + 1), dtype=np.uint16) for i in range(3)])
    tifffile.imwrite(tmp_path / "stack.tif", pages, photometric="minisblack", metadata=None)  # plain pages
    with tifffile.TiffWriter(tmp_path / "one_by_one.tif") as writer:
        for page in pages:
            writer.write(page, photometric="minisblack")  # each page a series of its own
    for name in ("stack.tif", "one_by_one.tif"):
        pixels = load_image(tmp_path / name)
        assert pixels.shape == (6, 8, 3), name
        assert [pixels[0, 0, c] for c in range(3)] == [100, 200, 300]
        assert to_image_tensor(pixels, AUTO).shape == (3, 6, 8)


def test_multi_channel_tiffs_give_their_channels(tmp_path):
    planar = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="minisblack", metadata={"axes": "CYX"})
    assert np.array_equal(load_image(tmp_path / "planar.tif"), planar.transpose(1, 2, 0))
    samples = planar.transpose(1, 2, 0).copy()  # (5, 6, 4): 4 samples per pixel
    tifffile.imwrite(tmp_path / "samples.tif", samples, photometric="rgb", extrasamples=[0])
    assert np.array_equal(load_image(tmp_path / "samples.tif"), samples)
    hyperstack = np.arange(2 * 3 * 5 * 6, dtype=np.uint16).reshape(2, 3, 5, 6)  # Z, C, Y, X
    tifffile.imwrite(tmp_path / "zc.tif", hyperstack, imagej=True, metadata={"axes": "ZCYX"})
    pixels = load_image(tmp_path / "zc.tif")
    assert pixels.shape == (5, 6, 6)
    assert np.array_equal(pixels[:, :, 4], hyperstack[1, 1])  # Z-major, then C
    with pytest.raises(ValueError, match=r"zc.tif: image has 6 channels \(shape \(5, 6, 6\)\)"):
        to_image_tensor(pixels, config(channels=4), "zc.tif")


def png_header_only(path, width: int, height: int) -> None:
    """A PNG that claims width x height gray pixels and holds almost none."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 8))
        + chunk(b"IEND", b"")
    )


def tiff_header_only(path, width: int, height: int) -> None:
    """A one-page TIFF whose ImageWidth and ImageLength tags claim width x height, and no pixels."""
    short, long = 3, 4
    tags = [
        (256, long, width),
        (257, long, height),
        (258, short, 8),  # bits per sample
        (259, short, 1),  # no compression
        (262, short, 1),  # black is zero
        (273, long, 8),  # strip offset
        (277, short, 1),  # samples per pixel
        (278, long, height),  # rows per strip
        (279, long, width * height),  # strip bytes
    ]
    data = b"II*\x00" + struct.pack("<IH", 8, len(tags))
    for tag, kind, value in tags:
        data += struct.pack("<HHI", tag, kind, 1)
        data += struct.pack("<HH", value, 0) if kind == short else struct.pack("<I", value)
    path.write_bytes(data + struct.pack("<I", 0))


@pytest.mark.parametrize("name, write", [("bomb.png", png_header_only), ("bomb.tif", tiff_header_only)])
def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, monkeypatch, name, write):
    path = tmp_path / name
    write(path, 50_000, 50_000)
    assert path.stat().st_size < 1000

    def decoded(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    # refused from the header: neither PIL nor tifffile decodes a pixel
    monkeypatch.setattr(ImageFile.ImageFile, "load", decoded)
    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", decoded)
    if name.endswith(".png"):  # PIL's own guard, where the program keeps it, speaks first
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)
        with pytest.raises(
            ImageTooLargeError, match=r"bomb.png: Image size \(2500000000 pixels\).*PIL's limit"
        ):
            load_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # as the maskrcnn program has it
    with pytest.raises(ImageTooLargeError) as error:
        load_image(path)
    message = str(error.value)
    assert message.startswith(f"{path}: image is 50000 x 50000 pixels (2500.0 megapixels)")
    assert "limit of 300 megapixels" in message and "data.max_image_pixels" in message
    with pytest.raises(ImageTooLargeError, match="limit of 1000 megapixels"):
        load_image(path, max_pixels=1_000_000_000)


def test_the_limit_is_ours_not_pils(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((48, 64), dtype=np.uint8)).save(tmp_path / "small.png")
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((3, 48, 64), dtype=np.uint16), photometric="minisblack")
    with pytest.raises(ImageTooLargeError, match=r"small.png: image is 64 x 48 pixels"):
        load_image(tmp_path / "small.png", max_pixels=3000)
    with pytest.raises(ImageTooLargeError, match=r"64 x 48 pixels x 3 planes"):
        load_image(tmp_path / "stack.tif", max_pixels=9000)
    assert load_image(tmp_path / "stack.tif", max_pixels=9216).shape == (48, 64, 3)
    # PIL's own process-wide guard is the program's: a read never changes it (other threads'
    # PIL calls would see the change), and an image over it is refused naming that limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    seen = []
    original_open = Image.open
    monkeypatch.setattr(
        Image, "open", lambda *a, **k: seen.append(Image.MAX_IMAGE_PIXELS) or original_open(*a, **k)
    )
    with pytest.raises(
        ImageTooLargeError, match=r"small.png: Image size \(3072 pixels\) exceeds limit of 200.*PIL"
    ):
        load_image(tmp_path / "small.png")
    assert seen == [100] and Image.MAX_IMAGE_PIXELS == 100
    # the maskrcnn program, whose every read checks its own limit, switches PIL's off once
    leave_size_limits_to_maskrcnn()
    assert Image.MAX_IMAGE_PIXELS is None
    assert load_image(tmp_path / "small.png").shape == (48, 64)


def test_missing_and_broken_files_name_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"nothing.tif: file not found"):
        load_image(tmp_path / "nothing.tif")
    (tmp_path / "broken.tif").write_bytes(b"II*\x00 not really a tiff")
    with pytest.raises(ValueError, match=r"broken.tif: cannot read image"):
        load_image(tmp_path / "broken.tif")


def png_16_bit(path, values: np.ndarray, colour_type: int) -> None:
    """A 16-bit PNG as a camera or microscope SDK writes it (PIL writes no 16-bit colour PNG)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width = values.shape[:2]
    rows = b"".join(b"\0" + values[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("colour_type, kind", [(2, "RGB"), (4, "gray+alpha"), (6, "RGBA")])
def test_a_16_bit_colour_png_is_refused_not_cut_to_8_bits(tmp_path, colour_type, kind):
    rgb = np.zeros((12, 16, 3), np.uint16)
    rgb[3:8, 4:10] = (3000, 1000, 200)
    rgb[3:8, 10:] = (3001, 1003, 203)  # PIL's 8 bits make these the same colour
    opaque = np.full((12, 16, 1), 65535, np.uint16)
    values = {2: rgb, 4: np.dstack([rgb[..., :1], opaque]), 6: np.dstack([rgb, opaque])}[colour_type]
    path = tmp_path / f"{kind}.png"
    png_16_bit(path, values, colour_type)
    with pytest.raises(ValueError) as error:
        load_image(path)
    message = str(error.value)
    assert message.startswith(f"{path}: 16-bit {kind} PNG: ") and "\n" not in message
    assert "PIL reads only 8 bits of a 16-bit colour PNG" in message and "16-bit TIFF" in message
    with pytest.raises(ValueError, match="PIL reads only 8 bits"):  # the server's bytes too
        read_with_pil(io.BytesIO(path.read_bytes()), lambda w, h, planes: None)
    # 16-bit gray stays 16-bit
    png_16_bit(tmp_path / "gray.png", rgb[..., 0], 0)
    pixels = load_image(tmp_path / "gray.png")
    assert pixels.dtype == np.uint16 and np.array_equal(pixels, rgb[..., 0])


def test_a_corrupt_exif_warning_names_the_file(tmp_path):
    encoded = io.BytesIO()
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(encoded, "JPEG")
    jpeg = encoded.getvalue()
    exif = b"Exif\x00\x00II*\x00\xff\xff\xff\x7f" + b"\x00" * 10  # its first directory far away
    segment = b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif
    path = tmp_path / "bad exif.jpg"
    path.write_bytes(jpeg[:2] + segment + jpeg[2:])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_image(path).shape == (6, 8, 3)
    messages = [str(warning.message) for warning in caught]
    assert len(messages) == 1 and messages[0].startswith(f"{path}: Corrupt EXIF data"), messages
    assert "\n" not in messages[0] and "  " not in messages[0]
