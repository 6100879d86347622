"""`maskrcnn convert` on what real tools and devices write: EXIF-rotated photos, Roboflow's
data.yaml, LabelMe files saved on Windows or holding mask shapes, palette label PNGs, Excel
CSVs, WebP images; and what cannot be converted, named in one line with exit code 2."""

import io
import json
import struct
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image
from test_converters import convert, one_error  # the helpers of the first converter tests

from maskrcnn.data.converters.coco_file import header_size
from maskrcnn.data.images import load_image

ROTATED = 6  # EXIF orientation: shown turned a quarter, width and height swapped


def rotated_jpeg(path, stored=(80, 120)) -> None:
    """A JPEG stored `stored` (height, width) and shown the other way round."""
    exif = Image.Exif()
    exif[0x0112] = ROTATED
    Image.fromarray(np.zeros((*stored, 3), np.uint8)).save(path, exif=exif.tobytes())


def shape(label, points, kind="polygon", group=None, **extra):
    return {"label": label, "points": points, "shape_type": kind, "group_id": group, **extra}


def labelme_json(path, image_path, shapes, size) -> None:
    document = {"imagePath": image_path, "imageHeight": size[0], "imageWidth": size[1], "shapes": shapes}
    path.write_text(json.dumps(document))


def yolo_tree(root, image_name="a.jpg", rows=("0 0.1 0.1 0.5 0.1 0.5 0.5",), size=(50, 100)):
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    image = root / "images" / "train" / image_name
    Image.fromarray(np.zeros((*size, 3), np.uint8)).save(image)
    (root / "labels" / "train" / f"{image.stem}.txt").write_text("\n".join(rows) + "\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nnames: [cell, debris]\n")
    return root / "data.yaml"


# EXIF orientation: the size as displayed, which `train` reads


def test_yolo_coordinates_are_scaled_by_the_displayed_size_of_a_rotated_photo(tmp_path):
    data = yolo_tree(tmp_path, rows=("0 0.1 0.1 0.9 0.1 0.5 0.9",))
    image = tmp_path / "images" / "train" / "a.jpg"
    rotated_jpeg(image)  # stored 120 wide x 80 high, shown 80 wide x 120 high
    assert convert("yolo", data, "--out", tmp_path / "o.json") == 0
    document = json.loads((tmp_path / "o.json").read_text())
    (entry,) = document["images"]
    assert (entry["height"], entry["width"]) == (120, 80) == load_image(image).shape[:2]
    (annotation,) = document["annotations"]
    assert annotation["segmentation"] == [pytest.approx([8.0, 12.0, 72.0, 12.0, 40.0, 108.0])]
    x, y, w, h = annotation["bbox"]
    assert 8 <= x and x + w <= 72 and 12 <= y and y + h <= 108 and h > 80


def test_labelme_and_label_images_take_the_displayed_size_of_a_rotated_photo(tmp_path, capsys):
    rotated_jpeg(tmp_path / "a.jpg")
    square = [[20, 100], [40, 100], [40, 110], [20, 110]]  # y 100..110: only in the shown image
    labelme_json(tmp_path / "a.json", "a.jpg", [shape("cell", square)], size=(120, 80))
    assert convert("labelme", tmp_path, "--out", tmp_path / "lm.json") == 0
    document = json.loads((tmp_path / "lm.json").read_text())
    assert (document["images"][0]["height"], document["images"][0]["width"]) == (120, 80)
    assert document["annotations"][0]["area"] == 200
    labels = tmp_path / "labels"
    labels.mkdir()
    values = np.zeros((120, 80), np.uint16)  # a mask of the image as shown (Cellpose's)
    values[100:110, 20:40] = 1
    Image.fromarray(values).save(labels / "a_cp_masks.png")
    (tmp_path / "a.json").unlink()
    assert convert("masks", tmp_path, labels, "--out", tmp_path / "m.json") == 0, capsys.readouterr().err
    document = json.loads((tmp_path / "m.json").read_text())
    assert (document["images"][0]["height"], document["images"][0]["width"]) == (120, 80)
    assert document["annotations"][0]["bbox"] == [20.0, 100.0, 20.0, 10.0]


def png_with_exif_after_pixels(path) -> None:
    """A PNG whose eXIf chunk (orientation 6) follows its pixels, as some writers place it."""
    exif = Image.Exif()
    exif[0x0112] = ROTATED
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 12), np.uint8)).save(buffer, "PNG")
    data = buffer.getvalue()
    chunk = struct.pack(">I4s", len(exif.tobytes()), b"eXIf") + exif.tobytes()
    chunk += struct.pack(">I", zlib.crc32(chunk[4:]))
    path.write_bytes(data[:-12] + chunk + data[-12:])  # before IEND


def test_the_header_size_is_the_size_train_reads_for_every_place_of_the_exif(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = ROTATED
    Image.fromarray(np.zeros((8, 12), np.uint8)).save(tmp_path / "early.png", exif=exif.tobytes())
    Image.fromarray(np.zeros((8, 12), np.uint8)).save(tmp_path / "plain.png")
    Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(tmp_path / "w.webp", exif=exif.tobytes())
    png_with_exif_after_pixels(tmp_path / "late.png")
    tifffile.imwrite(
        tmp_path / "turned.tif", np.zeros((8, 12), np.uint16), extratags=[(274, "H", 1, ROTATED)]
    )
    for name, size in (
        ("early.png", (12, 8)),
        ("plain.png", (8, 12)),
        ("w.webp", (12, 8)),
        ("late.png", (12, 8)),
        ("turned.tif", (12, 8)),  # the TIFF Orientation tag
    ):
        assert header_size(tmp_path / name) == size == load_image(tmp_path / name).shape[:2], name


# YOLO data.yaml


def test_roboflows_data_yaml_is_read_as_ultralytics_reads_it(tmp_path, capsys):
    root = tmp_path / "rf"
    for split in ("train", "valid"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        Image.fromarray(np.zeros((100, 160, 3), np.uint8)).save(root / split / "images" / "i_jpg.rf.3f.jpg")
        (root / split / "labels" / "i_jpg.rf.3f.txt").write_text("1 0.25 0.2 0.75 0.2 0.75 0.8 0.25 0.8\n")
    (root / "data.yaml").write_text(
        "train: ../train/images\nval: ../valid/images\ntest: ../test/images\nnc: 2\nnames: ['cat', 'dog']\n"
    )
    for split in ("train", "val"):
        assert convert("yolo", root / "data.yaml", "--split", split, "--out", tmp_path / "o.json") == 0
        document = json.loads((tmp_path / "o.json").read_text())
        assert [i["file_name"] for i in document["images"]] == ["i_jpg.rf.3f.jpg"]
        assert [a["area"] for a in document["annotations"]] == [4800.0]
        assert document["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    assert convert("yolo", root / "data.yaml", "--split", "test", "--out", tmp_path / "o.json") == 2
    err = one_error(capsys)
    assert f"{root / 'data.yaml'}: field 'test': folder {root / '../test/images'} does not exist" in err
    assert "list" not in err
    (root / "data.yaml").write_text("train: train.txt\nnames: [cat]\n")
    assert convert("yolo", root / "data.yaml", "--out", tmp_path / "o.json") == 2
    assert "field 'train': train.txt is a list of image files, which is not read" in one_error(capsys)


def test_a_yolo_box_is_clipped_to_the_image_as_polygons_are(tmp_path, capsys):
    data = yolo_tree(tmp_path, rows=("1 0.95 0.1 0.2 0.2", "0 0.5 0.5 0.0 0.2"))  # 100 x 50 pixels
    assert convert("yolo", data, "--out", tmp_path / "o.json") == 0
    assert "skipped 1 boxes without a pixel in the image (no area" in capsys.readouterr().out
    (annotation,) = json.loads((tmp_path / "o.json").read_text())["annotations"]
    assert annotation["bbox"] == pytest.approx([85.0, 0.0, 15.0, 10.0])
    assert annotation["area"] == pytest.approx(150.0)


# Image formats


def test_webp_images_are_converted(tmp_path, capsys):
    data = yolo_tree(tmp_path / "y", image_name="w.webp")
    assert convert("yolo", data, "--out", tmp_path / "y.json") == 0
    assert json.loads((tmp_path / "y.json").read_text())["images"][0]["file_name"] == "w.webp"
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "img" / "a.webp")
    Image.fromarray(np.eye(20, 30, dtype=np.uint8)).save(tmp_path / "lab" / "a_masks.png")
    assert convert("masks", tmp_path / "img", tmp_path / "lab", "--out", tmp_path / "m.json") == 0
    document = json.loads((tmp_path / "m.json").read_text())
    assert document["images"][0]["file_name"] == "a.webp" and document["annotations"][0]["area"] == 20


# Label images and class tables


def test_a_palette_label_image_is_read_as_its_label_values(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    Image.fromarray(np.zeros((64, 80, 3), np.uint8)).save(tmp_path / "img" / "p.png")
    values = np.zeros((64, 80), np.uint8)
    values[5:20, 5:20] = 1
    values[30:40, 40:60] = 2
    indexed = Image.fromarray(values, mode="L").convert("P")
    indexed.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)  # Fiji's, VOC's colours
    table = tmp_path / "c.csv"
    table.write_text("1,small\n2,wide\n")
    colours = np.zeros((3, 256), np.uint16)
    colours[0, 1], colours[1, 2] = 32768, 32768
    for suffix in (".png", ".tif"):  # a TIFF's colour map too: not the image's colours
        for old in (tmp_path / "lab").iterdir():
            old.unlink()
        if suffix == ".png":
            indexed.save(tmp_path / "lab" / "p.png")
        else:
            tifffile.imwrite(tmp_path / "lab" / "p.tif", values, photometric="palette", colormap=colours)
        out = tmp_path / "o.json"
        assert convert("masks", tmp_path / "img", tmp_path / "lab", "--out", out, "--classes", table) == 0
        document = json.loads(out.read_text())
        names = {c["id"]: c["name"] for c in document["categories"]}
        found = {names[a["category_id"]]: (a["area"], a["bbox"]) for a in document["annotations"]}
        small, wide = (225.0, [5.0, 5.0, 15.0, 15.0]), (200.0, [40.0, 30.0, 20.0, 10.0])
        assert found == {"small": small, "wide": wide}, suffix


def test_an_excel_csv_with_a_byte_order_mark_keeps_its_first_row(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "img" / "a.png")
    values = np.zeros((20, 30), np.uint16)
    values[2:6, 2:6], values[10:12, 10:20] = 300, 7
    Image.fromarray(values).save(tmp_path / "lab" / "a_masks.png")
    table = tmp_path / "classes.csv"
    table.write_bytes(b"\xef\xbb\xbf300,nucleus\r\n7,mitotic\r\n")  # Excel's "CSV UTF-8"
    assert (
        convert("masks", tmp_path / "img", tmp_path / "lab", "--out", tmp_path / "o.json", "--classes", table)
        == 0
    )
    document = json.loads((tmp_path / "o.json").read_text())
    assert document["categories"] == [{"id": 1, "name": "mitotic"}, {"id": 2, "name": "nucleus"}]
    names = {c["id"]: c["name"] for c in document["categories"]}
    assert sorted((names[a["category_id"]], a["area"]) for a in document["annotations"]) == [
        ("mitotic", 20.0),
        ("nucleus", 16.0),
    ]
