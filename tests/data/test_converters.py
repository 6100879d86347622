"""`maskrcnn convert`: label images, YOLO and LabelMe labels to COCO and back to the same
instances; bad input named in one line with exit code 2."""

import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import tifffile
from PIL import Image

from maskrcnn.cli.main import main
from maskrcnn.data.coco import AnnotationWarning, CocoDataset


def decoded(annotation: dict, height: int, width: int) -> np.ndarray:
    segmentation = annotation["segmentation"]
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    else:
        rle = dict(segmentation, counts=segmentation["counts"].encode())
    return mask_utils.decode(rle).astype(bool)


def convert(*argv) -> int:
    return main(["convert", *map(str, argv)])


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


# Instance label images


def label_image_with(height=60, width=80) -> np.ndarray:
    """Labels with a ring (a hole), an instance in two pieces and one touching the border."""
    labels = np.zeros((height, width), dtype=np.uint16)
    rows, cols = np.mgrid[:height, :width]
    distance = np.hypot(rows - 20, cols - 20)
    labels[(distance < 12) & (distance >= 5)] = 7  # a ring: its hole is background
    labels[40:50, 5:15] = 3
    labels[40:50, 60:70] = 3  # label 3 in two pieces: one instance
    labels[0:10, 70:80] = 12  # on the border
    return labels


def test_label_images_become_exact_rle_instances(tmp_path, capsys):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    first = label_image_with()
    # more than 255 instances in 16 bits: a grid of 300 squares
    second = np.zeros((200, 300), dtype=np.uint16)
    for k in range(300):
        r, c = divmod(k, 20)
        second[r * 10 : r * 10 + 8, c * 15 : c * 15 + 12] = k + 1
    Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(images / "a.png")
    Image.fromarray(np.zeros((200, 300, 3), np.uint8)).save(images / "b.png")
    Image.fromarray(first).save(labels / "a_label.png")  # 16-bit PNG
    tifffile.imwrite(labels / "b_masks.tif", second)
    out = tmp_path / "coco.json"
    assert convert("masks", images, labels, "--out", out, "--class-name", "nucleus") == 0
    assert "2 images, 303 instances (303 nucleus)" in capsys.readouterr().out
    document = json.loads(out.read_text())
    by_file = {image["file_name"]: image for image in document["images"]}
    assert set(by_file) == {"a.png", "b.png"}
    for name, labels_array in (("a.png", first), ("b.png", second)):
        image = by_file[name]
        found = [a for a in document["annotations"] if a["image_id"] == image["id"]]
        values = [v for v in np.unique(labels_array) if v]
        assert len(found) == len(values)
        masks = sorted(
            (decoded(a, image["height"], image["width"]) for a in found), key=lambda m: m.tobytes()
        )
        expected = sorted((labels_array == v for v in values), key=lambda m: m.tobytes())
        assert all(np.array_equal(m, e) for m, e in zip(masks, expected))  # identical, holes and pieces kept
    # training reads it as it is
    dataset = CocoDataset(out, images)
    assert len(dataset) == 2 and sum(len(r.instances) for r in dataset.records) == 303


def test_a_class_table_names_each_label_value(tmp_path, capsys):
    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
    Image.fromarray(np.zeros((60, 80), np.uint8)).save(tmp_path / "images" / "a.tif")
    Image.fromarray(label_image_with()).save(tmp_path / "labels" / "a.png")
    table = tmp_path / "classes.csv"
    table.write_text("value,class\n7,ring\n3,pair\n12,corner\n")
    out = tmp_path / "c.json"
    assert convert("masks", tmp_path / "images", tmp_path / "labels", "--out", out, "--classes", table) == 0
    document = json.loads(out.read_text())
    names = {c["id"]: c["name"] for c in document["categories"]}
    assert sorted(names[a["category_id"]] for a in document["annotations"]) == ["corner", "pair", "ring"]
    table.write_text("7,ring\n3,pair\n")
    assert convert("masks", tmp_path / "images", tmp_path / "labels", "--out", out, "--classes", table) == 2
    assert "a.png: label value 12 has no class in the class table" in one_error(capsys)


def test_bad_label_images_are_named(tmp_path, capsys):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    Image.fromarray(label_image_with()).save(labels / "lonely_masks.png")
    assert convert("masks", images, labels, "--out", tmp_path / "o.json") == 2
    assert f"{labels / 'lonely_masks.png'}: no image lonely.* in {images}" in one_error(capsys)
    (labels / "lonely_masks.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(images / "lonely.png")
    assert convert("masks", images, labels, "--out", tmp_path / "o.json") == 2
    assert "lonely_masks.png: cannot read image" in one_error(capsys)
    assert not (tmp_path / "o.json").exists()


# YOLO


def yolo_dataset(root, lines: dict[str, list[str]], names=("cell", "debris")):
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    for stem, rows in lines.items():
        Image.fromarray(np.zeros((50, 100, 3), np.uint8)).save(root / "images" / "train" / f"{stem}.jpg")
        (root / "labels" / "train" / f"{stem}.txt").write_text("\n".join(rows) + "\n")
    data = root / "data.yaml"
    data.write_text(f"path: .\ntrain: images/train\nval: images/train\nnames: {list(names)}\n")
    return data


def test_yolo_polygons_become_coco_polygons_of_the_same_masks(tmp_path, capsys):
    polygons = {
        "a": ["0 0.1 0.1 0.4 0.1 0.4 0.6 0.1 0.6", "1 0.0 0.0 0.2 0.0 0.1 0.3"],  # one on the border
        "b": ["1 0.5 0.5 0.9 0.5 1.0 1.0 0.5 1.0", "0 0.5 0.5 0.2 0.2"],  # the last: a box only
    }
    data = yolo_dataset(tmp_path, polygons)
    out = tmp_path / "yolo.json"
    assert convert("yolo", data, "--out", out) == 0
    printed = capsys.readouterr().out
    assert "2 images, 4 instances" in printed and "1 boxes without a polygon, kept as box-only" in printed
    document = json.loads(out.read_text())
    images = {i["file_name"]: i for i in document["images"]}
    assert set(images) == {"a.jpg", "b.jpg"}
    names = {c["id"]: c["name"] for c in document["categories"]}
    for stem, rows in polygons.items():
        image = images[f"{stem}.jpg"]
        found = [a for a in document["annotations"] if a["image_id"] == image["id"]]
        assert [names[a["category_id"]] for a in found] == [
            ("cell", "debris")[int(r.split()[0])] for r in rows
        ]
        for annotation, row in zip(found, rows):
            values = [float(v) for v in row.split()[1:]]
            if len(values) == 4:  # box-only: no segmentation, the box in pixels
                assert "segmentation" not in annotation
                assert annotation["bbox"] == pytest.approx([40.0, 20.0, 20.0, 10.0])  # cx 50, cy 25
                continue
            points = [v * (100 if i % 2 == 0 else 50) for i, v in enumerate(values)]
            expected = decoded({"segmentation": [points]}, 50, 100)
            got = decoded(annotation, 50, 100)
            assert (got & expected).sum() / (got | expected).sum() >= 0.95
    with pytest.warns(AnnotationWarning, match="1 no segmentation"):  # a mask model's reading
        dataset = CocoDataset(out, tmp_path / "images" / "train")
    assert sum(len(r.instances) for r in dataset.records) == 3  # the box-only one needs a box-only model
    boxes = CocoDataset(out, tmp_path / "images" / "train", masks=False)
    assert sum(len(r.instances) for r in boxes.records) == 4
    assert convert("yolo", data, "--out", out, "--require-masks") == 2
    assert "b.txt: line 2: a box without a polygon (--require-masks)" in one_error(capsys)


@pytest.mark.parametrize(
    "row, problem",
    [
        ("5 0.1 0.1 0.2 0.1 0.2 0.2", "line 1: class 5 is past the 2 names of data.yaml"),
        ("0 0.1 0.1", "line 1: a polygon needs at least 3 points"),  # (4 numbers would be a box)
        ("0 0.1 0.1 0.2 0.1 0.3", "line 1: a polygon needs at least 3 points"),
        ("0 0.1 0.1 0.2 1.5 0.2 0.2", "line 1: coordinates must be normalized to [0, 1]"),
        ("zero 0.1 0.1 0.2 0.1 0.2 0.2", "line 1: expected a class index and numbers"),
    ],
)
def test_bad_yolo_lines_are_named(tmp_path, capsys, row, problem):
    data = yolo_dataset(tmp_path, {"a": [row]})
    assert convert("yolo", data, "--out", tmp_path / "o.json") == 2
    assert f"{tmp_path / 'labels' / 'train' / 'a.txt'}: {problem}" in one_error(capsys)


def test_a_yolo_label_file_without_its_image_is_named(tmp_path, capsys):
    data = yolo_dataset(tmp_path, {"a": ["0 0.1 0.1 0.2 0.1 0.2 0.2"]})
    (tmp_path / "labels" / "train" / "ghost.txt").write_text("0 0.1 0.1 0.2 0.1 0.2 0.2\n")
    assert convert("yolo", data, "--out", tmp_path / "o.json") == 2
    assert f"{tmp_path / 'labels' / 'train' / 'ghost.txt'}: no image of this label file" in one_error(capsys)


# LabelMe


def labelme_file(folder, stem, shapes, size=(40, 60)):
    Image.fromarray(np.zeros((*size, 3), np.uint8)).save(folder / f"{stem}.png")
    document = {"imagePath": f"{stem}.png", "imageHeight": size[0], "imageWidth": size[1], "shapes": shapes}
    (folder / f"{stem}.json").write_text(json.dumps(document))


def shape(label, points, kind="polygon", group=None):
    return {"label": label, "points": points, "shape_type": kind, "group_id": group}


def test_labelme_shapes_become_coco_instances(tmp_path, capsys):
    labelme_file(
        tmp_path,
        "a",
        [
            shape("leaf", [[2, 2], [20, 2], [20, 15], [2, 15]]),
            shape("leaf", [[30, 30], [40, 30], [40, 38]], group=1),  # two parts of one instance
            shape("leaf", [[45, 30], [55, 30], [55, 38]], group=1),
            shape("stone", [[0, 0], [10, 8]], kind="rectangle"),  # on the border
            shape("stone", [[30, 10], [30, 16]], kind="circle"),
            shape("crack", [[1, 1], [5, 5]], kind="line"),  # no area: skipped and counted
        ],
    )
    out = tmp_path / "lm.json"
    assert convert("labelme", tmp_path, "--out", out) == 0
    printed = capsys.readouterr().out
    assert "1 images, 4 instances (2 leaf, 2 stone)" in printed and "skipped 1 line shapes" in printed
    document = json.loads(out.read_text())
    leaf, pair, box, circle = document["annotations"]
    assert len(pair["segmentation"]) == 2  # the group's two polygons, as COCO writes parts
    rectangle = decoded(box, 40, 60)
    assert rectangle[0:8, 0:10].all() and rectangle.sum() == 80  # pycocotools' own drawing
    disc = decoded(circle, 40, 60)
    rows, cols = np.mgrid[:40, :60]
    expected = np.hypot(rows + 0.5 - 10, cols + 0.5 - 30) < 6
    assert (disc & expected).sum() / (disc | expected).sum() >= 0.95
    assert CocoDataset(out, tmp_path).records[0].file_name == "a.png"


@pytest.mark.parametrize(
    "shapes, problem",
    [
        ([shape("leaf", [[2, 2], [20, 2]])], "shape 0: a polygon needs at least 3 points, got 2"),
        ([shape("stone", [[0, 0]], kind="rectangle")], "shape 0: a rectangle has 2 points, got 1"),
        ([shape("blob", [[0, 0], [3, 3]], kind="mask")], "shape 0: a mask shape needs 'mask'"),
    ],
)
def test_bad_labelme_shapes_are_named(tmp_path, capsys, shapes, problem):
    labelme_file(tmp_path, "a", shapes)
    assert convert("labelme", tmp_path, "--out", tmp_path / "o.json") == 2
    assert f"{tmp_path / 'a.json'}: {problem}" in one_error(capsys)


def test_a_labelme_file_without_its_image_is_named(tmp_path, capsys):
    labelme_file(tmp_path, "a", [shape("leaf", [[2, 2], [20, 2], [20, 15]])])
    (tmp_path / "a.png").unlink()
    assert convert("labelme", tmp_path, "--out", tmp_path / "o.json") == 2
    problem = f"{tmp_path / 'a.json'}: field 'imagePath': image {tmp_path / 'a.png'} not found"
    assert problem in one_error(capsys)


# The split and the options


def test_a_validation_fraction_splits_by_image_the_same_for_the_same_seed(tmp_path, capsys):
    for stem in "abcdefghij":
        labelme_file(tmp_path, stem, [shape("leaf", [[2, 2], [20, 2], [20, 15]])])
    out = tmp_path / "split.json"
    assert convert("labelme", tmp_path, "--out", out, "--val-fraction", "0.3", "--seed", "4") == 0
    train = json.loads((tmp_path / "split_train.json").read_text())
    val = json.loads((tmp_path / "split_val.json").read_text())
    names = lambda d: {i["file_name"] for i in d["images"]}  # noqa: E731
    assert len(names(val)) == 3 and len(names(train)) == 7 and not names(val) & names(train)
    assert {a["image_id"] for a in val["annotations"]} == {i["id"] for i in val["images"]}
    first = names(val)
    assert convert("labelme", tmp_path, "--out", out, "--val-fraction", "0.3", "--seed", "4") == 0
    assert names(json.loads((tmp_path / "split_val.json").read_text())) == first
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, problem",
    [
        (["yolo", "a", "b"], "convert yolo takes DATA.yaml, got 2 sources"),
        (
            ["labelme", "{tmp}", "--split", "val"],
            "--split: an option of convert yolo, not of convert labelme",
        ),
        (["masks", "{tmp}", "{tmp}", "--class-name", "a", "--classes", "c.csv"], "give one"),
        (["labelme", "{tmp}/missing"], "DIR {tmp}/missing: no such folder"),
    ],
)
def test_options_that_do_not_fit_are_refused(tmp_path, capsys, argv, problem):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert convert(*argv, "--out", tmp_path / "o.json") == 2
    assert problem.replace("{tmp}", str(tmp_path)) in one_error(capsys)
