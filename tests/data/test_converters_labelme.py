"""`maskrcnn convert labelme` on files as LabelMe writes them: Windows paths, mask shapes,
group ids numbered per class, labels met in any order, images resized after labelling,
shapes off the image; and a split that would leave a file without an image."""

import base64
import io
import json

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image
from test_converters import convert, one_error  # the helpers of the first converter tests


def shape(label, points, kind="polygon", group=None, **extra):
    return {"label": label, "points": points, "shape_type": kind, "group_id": group, **extra}


def labelme_file(folder, stem, shapes, size=(100, 150), image_path=None, labelled=None):
    """An image of `size` (height, width) and its LabelMe file, labelled on `labelled` (default: size)."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), 120, np.uint8)).save(folder / f"{stem}.jpg")
    height, width = labelled or size
    document = {
        "version": "5.5.0",
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path or f"{stem}.jpg",
        "imageData": None,
        "imageHeight": height,
        "imageWidth": width,
    }
    (folder / f"{stem}.json").write_text(json.dumps(document))


def written(path) -> tuple[dict, dict]:
    document = json.loads(path.read_text())
    return document, {c["id"]: c["name"] for c in document["categories"]}


def png_base64(mask: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_an_image_path_written_on_windows_is_found(tmp_path, capsys):
    triangle = [shape("cell", [[10, 10], [50, 10], [50, 40]])]
    labelme_file(tmp_path / "images", "b", [])
    labelme_file(tmp_path / "lm", "b", triangle, image_path="..\\images\\b.jpg")
    (tmp_path / "images" / "b.json").unlink()
    (tmp_path / "lm" / "b.jpg").unlink()
    assert convert("labelme", tmp_path / "lm", "--out", tmp_path / "o.json") == 0
    document, _ = written(tmp_path / "o.json")
    assert [i["file_name"] for i in document["images"]] == ["../images/b.jpg"]
    assert len(document["annotations"]) == 1
    (tmp_path / "images" / "b.jpg").unlink()
    assert convert("labelme", tmp_path / "lm", "--out", tmp_path / "o.json") == 2
    looked_for = tmp_path / "lm" / "../images/b.jpg"
    assert f"{tmp_path / 'lm' / 'b.json'}: field 'imagePath': image {looked_for} not found" in one_error(
        capsys
    )


def test_a_mask_shape_becomes_an_exact_rle_placed_as_labelme_places_it(tmp_path, capsys):
    pixels = np.zeros((20, 30), bool)
    pixels[5:15, 5:25] = True
    blob = shape("blob", [[100, 5], [129, 24]], kind="mask", mask=png_base64(pixels))
    # a mask over the right border: its part outside the image is left out
    edge = np.ones((10, 10), bool)
    border = shape("blob", [[145.7, 50.2], [154.7, 59.2]], kind="mask", mask=png_base64(edge))
    labelme_file(tmp_path, "a", [blob, border])
    assert convert("labelme", tmp_path, "--out", tmp_path / "o.json") == 0
    assert "2 instances (2 blob)" in capsys.readouterr().out
    document, names = written(tmp_path / "o.json")
    assert list(names.values()) == ["blob"]
    first, second = document["annotations"]
    assert first["area"] == 200 and first["bbox"] == [105.0, 10.0, 20.0, 10.0]
    rle = dict(first["segmentation"], counts=first["segmentation"]["counts"].encode())
    expected = np.zeros((100, 150), bool)
    expected[10:20, 105:125] = True
    assert np.array_equal(mask_utils.decode(rle).astype(bool), expected)
    assert second["area"] == 50 and second["bbox"] == [145.0, 50.0, 5.0, 10.0]
    wrong = shape("blob", [[100, 5], [119, 24]], kind="mask", mask=png_base64(pixels))
    labelme_file(tmp_path, "a", [wrong])
    assert convert("labelme", tmp_path, "--out", tmp_path / "o.json") == 2
    assert "a.json: shape 0: 'mask' is 30 x 20 pixels, but its points (100, 5) to (119, 24) span 20 x 20" in (
        one_error(capsys)
    )


def test_a_group_id_joins_shapes_of_one_label_only(tmp_path):
    shapes = [
        shape("cat", [[10, 10], [40, 10], [40, 40]], group=1),
        shape("cat", [[45, 10], [60, 10], [60, 40]], group=1),
        shape("dog", [[80, 50], [120, 50], [120, 90]], group=1),  # dog 1: another instance
    ]
    labelme_file(tmp_path, "a", shapes)
    assert convert("labelme", tmp_path, "--out", tmp_path / "o.json") == 0
    document, names = written(tmp_path / "o.json")
    found = sorted((names[a["category_id"]], len(a["segmentation"])) for a in document["annotations"])
    assert found == [("cat", 2), ("dog", 1)]


def test_classes_are_numbered_by_name_whatever_order_the_files_meet_them(tmp_path):
    for folder, order in (("train", ["dog", "cat"]), ("val", ["cat", "dog"])):
        squares = [[[10, 10], [40, 10], [40, 40], [10, 40]], [[80, 50], [120, 50], [120, 90], [80, 90]]]
        labelme_file(tmp_path / folder, "a", [shape(label, p) for label, p in zip(order, squares)])
        assert convert("labelme", tmp_path / folder, "--out", tmp_path / f"{folder}.json") == 0
    for folder in ("train", "val"):
        document, _ = written(tmp_path / f"{folder}.json")
        assert document["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]


def test_an_image_of_another_size_than_the_one_labelled_is_refused(tmp_path, capsys):
    labelme_file(tmp_path, "a", [shape("cell", [[20, 20], [100, 20], [100, 80]])], labelled=(200, 300))
    assert convert("labelme", tmp_path, "--out", tmp_path / "o.json") == 2
    err = one_error(capsys)
    assert f"{tmp_path / 'a.json'}: labelled on an image of 300 x 200 pixels" in err
    assert f"its image {tmp_path / 'a.jpg'} is 150 x 100" in err
    assert not (tmp_path / "o.json").exists()


def test_shapes_without_a_pixel_in_the_image_are_skipped_and_counted(tmp_path, capsys):
    shapes = [
        shape("cell", [[200, 120], [280, 120], [280, 190], [200, 190]]),  # right of the image
        shape("cell", [[10, 10], [30, 30], [50, 50]]),  # three points on a line
        shape("cell", [[20, 20], [100, 20], [100, 80], [20, 80]]),
    ]
    labelme_file(tmp_path, "a", shapes)
    assert convert("labelme", tmp_path, "--out", tmp_path / "o.json") == 0
    printed = capsys.readouterr().out
    assert "1 images, 1 instances (1 cell)" in printed
    assert "1 shapes without a pixel in the image (outside it)" in printed
    assert "1 shapes without a pixel in the image (no area: a line, or less than a pixel)" in printed
    document, _ = written(tmp_path / "o.json")
    assert [a["bbox"] for a in document["annotations"]] == [[20.0, 20.0, 80.0, 60.0]]


def test_a_split_that_would_leave_a_file_without_an_image_is_refused(tmp_path, capsys):
    labelme_file(tmp_path, "a", [shape("cell", [[20, 20], [100, 20], [100, 80]])])
    out = tmp_path / "one.json"
    assert convert("labelme", tmp_path, "--out", out, "--val-fraction", "0.2") == 2
    assert "--val-fraction 0.2: 1 image converted, too few to split" in one_error(capsys)
    assert not list(tmp_path.glob("one*.json"))
    labelme_file(tmp_path, "b", [shape("cell", [[20, 20], [100, 20], [100, 80]])])
    assert convert("labelme", tmp_path, "--out", out, "--val-fraction", "0.2") == 0
    counts = [len(json.loads((tmp_path / f"one_{s}.json").read_text())["images"]) for s in ("train", "val")]
    assert counts == [1, 1]
