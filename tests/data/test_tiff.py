"""TIFF files read in the colours PIL and viewers show, whatever their compression."""

import io
import logging
import struct

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageFile, ImageOps

from maskrcnn.data import tiff
from maskrcnn.data.images import ImageTooLargeError, load_image, read_tiff

HEIGHT, WIDTH = 12, 16
try:
    import imagecodecs  # noqa: F401  (not a dependency: tifffile decodes more with it)

    HAS_IMAGECODECS = True
except ImportError:
    HAS_IMAGECODECS = False


def red_square() -> np.ndarray:
    rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    rgb[3:8, 4:10] = (220, 40, 40)
    rgb[9:, 12:] = (10, 200, 90)  # a second colour off the diagonal, so turns are told apart
    return rgb


def pil_pixels(path) -> np.ndarray:
    """What PIL shows of a file, as RGB."""
    with Image.open(path) as image:
        return np.array(ImageOps.exif_transpose(image).convert("RGB"))


def handmade_tiff(path, pixels: bytes, width: int, height: int, bits: int, photometric: int, compression=1):
    """A one-strip, one-sample TIFF of the given tags: what tifffile cannot write without
    'imagecodecs' (4-bit samples, a JPEG 2000 compression tag)."""
    short, long = 3, 4
    tags = [
        (256, long, width),
        (257, long, height),
        (258, short, bits),
        (259, short, compression),
        (262, short, photometric),
        (273, long, 8),  # the strip right after the 8-byte file header
        (277, short, 1),
        (278, long, height),
        (279, long, len(pixels)),
    ]
    ifd = struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        ifd += struct.pack("<HHI", tag, kind, 1)
        ifd += struct.pack("<HH", value, 0) if kind == short else struct.pack("<I", value)
    pixels += b"\0" * (len(pixels) % 2)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8 + len(pixels)) + pixels + ifd + struct.pack("<I", 0))


def test_a_palette_tiff_is_read_through_its_colour_map_as_png_is(tmp_path):
    palette = Image.fromarray(red_square()).convert("P", palette=Image.Palette.ADAPTIVE)
    palette.save(tmp_path / "palette.tif")  # Photometric 3 with a ColorMap
    palette.save(tmp_path / "palette.png")
    pixels = load_image(tmp_path / "palette.tif")
    assert pixels.dtype == np.uint8 and pixels.shape == (HEIGHT, WIDTH, 3)
    assert np.array_equal(pixels, load_image(tmp_path / "palette.png"))
    assert np.array_equal(pixels, red_square())
    # colour maps are 16-bit: the high byte is the colour, as PIL takes it
    colormap = np.zeros((3, 256), np.uint16)
    colormap[:, 1] = (0x12FF, 0x3400, 0xFFFF)
    indices = np.zeros((HEIGHT, WIDTH), np.uint8)
    indices[2:5, 3:9] = 1
    tifffile.imwrite(tmp_path / "colormap.tif", indices, photometric="palette", colormap=colormap)
    pixels = load_image(tmp_path / "colormap.tif")
    assert pixels[3, 4].tolist() == [0x12, 0x34, 0xFF] and pixels[0, 0].tolist() == [0, 0, 0]
    assert np.array_equal(pixels, pil_pixels(tmp_path / "colormap.tif"))


def test_an_imagej_palette_tiff_keeps_its_indices(tmp_path):
    # ImageJ saves an 8-bit image with a LUT as a palette TIFF: the LUT only displays the data
    indices = (np.arange(HEIGHT * WIDTH) % 50).astype(np.uint8).reshape(HEIGHT, WIDTH)
    lut = np.zeros((3, 256), np.uint16)
    lut[1] = np.arange(256) * 257  # a green LUT
    tifffile.imwrite(tmp_path / "ij.tif", indices, imagej=True, photometric="palette", colormap=lut)
    pixels = load_image(tmp_path / "ij.tif")
    assert pixels.dtype == np.uint8 and np.array_equal(pixels, indices)


def test_a_miniswhite_tiff_is_inverted_as_pil_and_viewers_show_it(tmp_path):
    shown = red_square()[..., 0]  # 220 on black, as displayed
    tifffile.imwrite(tmp_path / "white8.tif", 255 - shown, photometric="miniswhite")
    pixels = load_image(tmp_path / "white8.tif")
    assert np.array_equal(pixels, shown)
    assert np.array_equal(pixels, np.array(Image.open(tmp_path / "white8.tif")))
    counts = shown.astype(np.uint16) * 13  # a 16-bit camera's counts
    tifffile.imwrite(tmp_path / "white16.tif", 65535 - counts, photometric="miniswhite")
    assert np.array_equal(load_image(tmp_path / "white16.tif"), counts)
    bilevel = shown > 0
    tifffile.imwrite(tmp_path / "white1.tif", ~bilevel, photometric="miniswhite")
    assert np.array_equal(load_image(tmp_path / "white1.tif"), bilevel.astype(np.uint8) * 255)
    assert np.array_equal(
        load_image(tmp_path / "white1.tif"), np.array(Image.open(tmp_path / "white1.tif").convert("L"))
    )
    # fewer bits than the type holds (12-bit counts in uint16): the maximum is the bits'
    assert tiff._inverted(np.array([0, 1000, 4095], np.uint16), 12).tolist() == [4095, 3095, 0]
    assert tiff._inverted(np.array([0, 15], np.uint8), 4).tolist() == [15, 0]
    assert tiff._inverted(np.array([-32768, 0, 32767], np.int16), 16).tolist() == [32767, -1, -32768]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_tiff_orientation_tag_turns_the_image_as_exif_orientation_does(tmp_path, orientation):
    rgb = red_square()
    picture = Image.fromarray(rgb)
    exif = picture.getexif()
    exif[0x0112] = orientation
    picture.save(tmp_path / "exif.png", exif=exif)
    shown = pil_pixels(tmp_path / "exif.png")  # ImageOps.exif_transpose
    tag = [(274, "H", 1, orientation, True)]
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb", extratags=tag)
    assert np.array_equal(load_image(tmp_path / "rgb.tif"), shown)
    assert np.array_equal(load_image(tmp_path / "rgb.tif"), pil_pixels(tmp_path / "rgb.tif"))
    # any channel count: two stains turn as each would alone
    stains = np.dstack([rgb[..., 0], rgb[..., 1]]).astype(np.uint16) * 100
    tifffile.imwrite(
        tmp_path / "stains.tif", stains, photometric="minisblack", planarconfig="contig", extratags=tag
    )
    pixels = load_image(tmp_path / "stains.tif")
    assert pixels.shape == shown.shape[:2] + (2,)
    for channel in range(2):
        gray = Image.fromarray(rgb[..., channel])
        gray.save(tmp_path / "gray.png", exif=exif)
        expected = (
            np.array(ImageOps.exif_transpose(Image.open(tmp_path / "gray.png"))).astype(np.uint16) * 100
        )
        assert np.array_equal(pixels[..., channel], expected)


def test_tiff_alpha_is_dropped_and_cmyk_becomes_rgb_as_pil_reads_them(tmp_path):
    rgb = red_square()
    alpha = np.full((HEIGHT, WIDTH), 255, np.uint8)
    alpha[0] = 0
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "pil_rgba.tif")
    for kind in ("unassalpha", "assocalpha"):
        tifffile.imwrite(
            tmp_path / f"{kind}.tif", np.dstack([rgb, alpha]), photometric="rgb", extrasamples=[kind]
        )
    for name in ("pil_rgba.tif", "unassalpha.tif", "assocalpha.tif"):
        assert np.array_equal(load_image(tmp_path / name), rgb), name
    tifffile.imwrite(
        tmp_path / "gray_alpha.tif",
        np.dstack([rgb[..., 0], alpha]),
        photometric="minisblack",
        extrasamples=["unassalpha"],
    )
    assert np.array_equal(load_image(tmp_path / "gray_alpha.tif"), rgb[..., 0])
    # CMYK, 8 bits as PIL converts it, and 16 bits the same way
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.tif")
    pixels = load_image(tmp_path / "cmyk.tif")
    assert pixels.dtype == np.uint8 and np.array_equal(pixels, pil_pixels(tmp_path / "cmyk.tif"))
    ink = np.array(Image.fromarray(rgb).convert("CMYK")).astype(np.uint16) * 257
    tifffile.imwrite(tmp_path / "cmyk16.tif", ink, photometric="separated")
    pixels = load_image(tmp_path / "cmyk16.tif")
    assert pixels.dtype == np.uint16 and np.array_equal(
        pixels, pil_pixels(tmp_path / "cmyk.tif").astype(np.uint16) * 257
    )


def test_a_4_channel_tiff_without_alpha_is_not_called_rgba(tmp_path):
    from maskrcnn.config import InputConfig
    from maskrcnn.data.images import to_image_tensor

    stains = np.zeros((HEIGHT, WIDTH, 4), np.uint16)
    tifffile.imwrite(tmp_path / "four.tif", stains, photometric="minisblack", planarconfig="contig")
    pixels = load_image(tmp_path / "four.tif")
    with pytest.raises(ValueError) as error:
        to_image_tensor(pixels, InputConfig(), str(tmp_path / "four.tif"))
    message = str(error.value)
    assert "RGBA" not in message and "model.input.channels=4" in message


def pil_saved(path, image: Image.Image, **options) -> None:
    image.save(path, **options)


def test_tiffs_tifffile_cannot_decode_without_imagecodecs_are_read_with_pil(tmp_path):
    rgb = red_square()
    gray16 = rgb[..., 0].astype(np.uint16) * 13
    pil_saved(tmp_path / "lzw.tif", Image.fromarray(rgb), compression="tiff_lzw")
    pil_saved(tmp_path / "jpeg.tif", Image.fromarray(rgb), compression="jpeg")
    pil_saved(tmp_path / "g4.tif", Image.fromarray(rgb).convert("1"), compression="group4")
    pil_saved(tmp_path / "g16_lzw.tif", Image.fromarray(gray16), compression="tiff_lzw")
    assert np.array_equal(load_image(tmp_path / "lzw.tif"), rgb)
    assert np.array_equal(load_image(tmp_path / "jpeg.tif"), pil_pixels(tmp_path / "jpeg.tif"))
    bilevel = load_image(tmp_path / "g4.tif")
    assert bilevel.dtype == np.uint8 and np.array_equal(
        bilevel, np.array(Image.fromarray(rgb).convert("1").convert("L"))
    )
    pixels = load_image(tmp_path / "g16_lzw.tif")
    assert pixels.dtype == np.uint16 and np.array_equal(pixels, gray16)
    # pages as channels, as for an uncompressed stack
    pages = [Image.fromarray(gray16 + i) for i in range(3)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:], compression="tiff_lzw")
    assert np.array_equal(load_image(tmp_path / "stack.tif"), np.dstack([gray16 + i for i in range(3)]))
    # the same colours as tifffile gives an uncompressed file: palette, alpha, CMYK, orientation
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE)
    pil_saved(tmp_path / "palette.tif", palette, compression="tiff_lzw")
    pil_saved(
        tmp_path / "rgba.tif", Image.fromarray(np.dstack([rgb, rgb[..., 1]]), "RGBA"), compression="tiff_lzw"
    )
    pil_saved(tmp_path / "cmyk.tif", Image.fromarray(rgb).convert("CMYK"), compression="tiff_lzw")
    for name in ("palette.tif", "rgba.tif", "cmyk.tif"):
        assert np.array_equal(load_image(tmp_path / name), rgb), name
    picture = Image.fromarray(rgb)
    exif = picture.getexif()
    exif[0x0112] = 6
    pil_saved(tmp_path / "turned.tif", picture, exif=exif, compression="tiff_lzw")
    assert np.array_equal(load_image(tmp_path / "turned.tif"), np.rot90(rgb, -1))
    # the serve path: bytes in memory
    data = io.BytesIO((tmp_path / "lzw.tif").read_bytes())
    assert np.array_equal(read_tiff(data, lambda w, h, planes: None), rgb)


@pytest.mark.skipif(HAS_IMAGECODECS, reason="tifffile decodes 4-bit samples with imagecodecs")
def test_4_bit_samples_tifffile_cannot_unpack_are_read_with_pil(tmp_path):
    nibbles = np.tile(np.arange(16, dtype=np.uint8), (2, 1))  # (2, 16)
    packed = ((nibbles[:, 0::2] << 4) | nibbles[:, 1::2]).tobytes()
    handmade_tiff(tmp_path / "white4.tif", packed, 16, 2, bits=4, photometric=0)  # MinIsWhite
    pixels = load_image(tmp_path / "white4.tif")
    assert np.array_equal(pixels, np.array(Image.open(tmp_path / "white4.tif")))
    assert pixels[0].tolist() == [255 - 17 * n for n in range(16)]  # PIL's 8 bits, inverted


def test_the_size_limit_holds_before_pil_decodes_a_tiff(tmp_path, monkeypatch):
    gray16 = np.zeros((48, 64), np.uint16)
    pages = [Image.fromarray(gray16) for _ in range(3)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:], compression="tiff_lzw")

    def decoded(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decoded)
    with pytest.raises(ImageTooLargeError, match=r"stack.tif: image is 64 x 48 pixels x 3 planes"):
        load_image(tmp_path / "stack.tif", max_pixels=9000)


def test_a_tiff_neither_tifffile_nor_pil_decodes_names_the_file_and_the_compression(tmp_path):
    path = tmp_path / "j2k.tif"
    handmade_tiff(path, b"\xff\x4f\xff\x51 not a codestream", 8, 6, bits=8, photometric=1, compression=34712)
    with pytest.raises(ValueError) as error:
        load_image(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "JPEG2000" in message and "imagecodecs" in message and "PIL cannot read it either" in message


def test_tifffile_log_of_a_corrupt_file_goes_into_the_error_that_names_it(tmp_path, caplog, capfd):
    tifffile.imwrite(tmp_path / "ok.tif", np.zeros((6, 8), np.uint16))
    data = bytearray((tmp_path / "ok.tif").read_bytes())
    data[4:8] = struct.pack("<I", 10**6)  # the first page far past the end
    (tmp_path / "bad.tif").write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING), pytest.raises(ValueError) as error:
        load_image(tmp_path / "bad.tif")
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'bad.tif'}: cannot read image") and "\n" not in message
    assert "invalid offset to first page 1000000" in message
    assert not [record for record in caplog.records if record.name == "tifffile"]
    assert "invalid offset" not in capfd.readouterr().err


def test_pil_reads_a_tiff_as_tifffile_does_when_it_has_to(tmp_path, monkeypatch):
    """The PIL path gives what the tifffile path gives: the same file read both ways."""
    rgb = red_square()
    counts = rgb[..., 0].astype(np.uint16) * 13
    lut = np.zeros((3, 256), np.uint16)
    lut[1] = np.arange(256) * 257
    turned = [(274, "H", 1, 6, True)]
    writes = {
        "imagej_lut.tif": dict(data=rgb[..., 0] // 5, imagej=True, photometric="palette", colormap=lut),
        "white16.tif": dict(data=65535 - counts, photometric="miniswhite"),
        "white8.tif": dict(data=255 - rgb[..., 1], photometric="miniswhite"),
        "rgba.tif": dict(data=np.dstack([rgb, rgb[..., 2]]), photometric="rgb", extrasamples=["unassalpha"]),
        "turned.tif": dict(data=rgb, photometric="rgb", extratags=turned),
        "pages.tif": dict(data=np.stack([counts, counts + 1, counts + 2]), photometric="minisblack"),
    }
    for name, arguments in writes.items():
        tifffile.imwrite(tmp_path / name, **arguments)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.tif")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "palette.tif")
    by_tifffile = {name: load_image(tmp_path / name) for name in [*writes, "cmyk.tif", "palette.tif"]}
    monkeypatch.setattr(tiff, "_missing_codec", lambda series: "a codec tifffile lacks (in this test)")
    for name, pixels in by_tifffile.items():
        by_pil = load_image(tmp_path / name)
        assert by_pil.dtype == pixels.dtype and np.array_equal(by_pil, pixels), name
