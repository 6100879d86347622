import json
import warnings
from dataclasses import replace

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from PIL import Image

from maskrcnn.config import InputConfig
from maskrcnn.data.coco import AnnotationWarning, BadImageWarning, CocoDataset, collate
from maskrcnn.data.coco_annotations import decode_rles
from maskrcnn.data.transforms import Compose, RandomHorizontalFlip, ResizeShortestSide

HEIGHT, WIDTH = 10, 12


def write_coco(tmp_path, annotations, categories=None, images=None, name="instances.json"):
    """Write a COCO file; every listed image gets a gray HEIGHT x WIDTH PNG unless it exists already."""
    image_dir = tmp_path / "images"
    image_dir.mkdir(exist_ok=True)
    if images is None:
        images = [{"id": 1, "file_name": "a.png", "height": HEIGHT, "width": WIDTH}]
    for image in images:
        path = image_dir / image["file_name"]
        if not path.exists():
            Image.new("RGB", (image["width"], image["height"]), (90, 120, 150)).save(path)
    if categories is None:
        categories = [{"id": 1, "name": "thing"}]
    path = tmp_path / name
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path, image_dir


def annotation(ann_id, segmentation, bbox=(3, 2, 4, 3), category_id=1, image_id=1, **extra):
    entry = {"id": ann_id, "image_id": image_id, "category_id": category_id, "segmentation": segmentation}
    if bbox is not None:
        entry["bbox"] = list(bbox)
    return {**entry, "iscrowd": 0, **extra}


SQUARE = [[3, 2, 7, 2, 7, 5, 3, 5]]  # pixel edges around rows 2..4, columns 3..6


def square_mask():
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[2:5, 3:7] = 1
    return mask


def blob_mask():
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[1:4, 2:5] = 1
    mask[6:9, 8:11] = 1  # two pieces: only RLE can say this in one annotation
    return mask


def uncompressed_counts(mask):
    """COCO's uncompressed RLE: run lengths over column-major pixels, starting with a run of zeros."""
    flat = mask.ravel(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    return counts if flat[0] == 0 else [0] + counts


def test_polygon_segmentation_decodes_to_its_pixels(tmp_path):
    dataset = CocoDataset(*write_coco(tmp_path, [annotation(1, SQUARE)]))
    image, target = dataset[0]
    assert image.shape == (3, HEIGHT, WIDTH) and image.dtype == torch.float32
    assert target["masks"].dtype == torch.uint8 and target["masks"].shape == (1, HEIGHT, WIDTH)
    assert torch.equal(target["masks"][0], torch.from_numpy(square_mask()))
    assert target["boxes"].tolist() == [[3.0, 2.0, 7.0, 5.0]]
    assert target["labels"].tolist() == [1] and target["labels"].dtype == torch.int64
    assert target["image_id"] == 1 and target["file_name"] == "a.png"


def test_compressed_and_uncompressed_rle_decode(tmp_path):
    mask = blob_mask()
    compressed = mask_utils.encode(np.asfortranarray(mask))
    annotations = [
        annotation(1, {"size": [HEIGHT, WIDTH], "counts": compressed["counts"].decode()}, bbox=(2, 1, 9, 8)),
        annotation(2, {"size": [HEIGHT, WIDTH], "counts": uncompressed_counts(mask)}, bbox=(2, 1, 9, 8)),
        annotation(3, {"size": [HEIGHT, WIDTH], "counts": uncompressed_counts(square_mask())}),
    ]
    _, target = CocoDataset(*write_coco(tmp_path, annotations))[0]
    expected = torch.from_numpy(np.stack([mask, mask, square_mask()]))
    assert torch.equal(target["masks"], expected)


def test_missing_bbox_comes_from_the_mask(tmp_path):
    compressed = mask_utils.encode(np.asfortranarray(blob_mask()))
    rle = {"size": [HEIGHT, WIDTH], "counts": compressed["counts"].decode()}
    _, target = CocoDataset(
        *write_coco(tmp_path, [annotation(1, SQUARE, bbox=None), annotation(2, rle, None)])
    )[0]
    assert target["boxes"].tolist() == [[3.0, 2.0, 7.0, 5.0], [2.0, 1.0, 11.0, 9.0]]


def test_non_contiguous_category_ids_map_to_labels_and_back(tmp_path):
    categories = [{"id": 90, "name": "ninety"}, {"id": 3, "name": "three"}, {"id": 17, "name": "seventeen"}]
    annotations = [annotation(i, SQUARE, category_id=c) for i, c in enumerate((17, 90, 3), start=1)]
    dataset = CocoDataset(*write_coco(tmp_path, annotations, categories))
    assert dataset.category_ids == (3, 17, 90)
    assert dataset.class_names == ("__background__", "three", "seventeen", "ninety")
    assert dataset.num_classes == 4
    _, target = dataset[0]
    assert target["labels"].tolist() == [2, 3, 1]
    assert [dataset.label_to_category_id(label) for label in target["labels"].tolist()] == [17, 90, 3]
    assert [dataset.category_ids[label - 1] for label in (1, 2, 3)] == [3, 17, 90]


def test_broken_annotations_are_dropped_and_counted_in_one_warning(tmp_path):
    annotations = [
        annotation(1, SQUARE),  # fine
        annotation(2, [[1, 1, 5, 5]]),  # two points
        annotation(3, [[2, 2, 4, 2]], bbox=(2, 2, 2, 0)),  # two points and no height
        annotation(4, SQUARE, bbox=(3, 2, 0, 3)),  # zero-area box
        annotation(5, SQUARE, bbox=(50, 50, 4, 4)),  # outside the image
        annotation(6, SQUARE, category_id=42),
        annotation(7, []),  # no segmentation
        annotation(8, [[0, 0, 1, 1], SQUARE[0]]),  # repaired: keeps its good polygon
        annotation(9, SQUARE, bbox=(-2, 1, 8, 30)),  # kept, clipped to the image
        annotation(10, SQUARE, iscrowd=1),  # crowd: left out, not an error
    ]
    with pytest.warns(AnnotationWarning) as record:
        dataset = CocoDataset(*write_coco(tmp_path, annotations, name="instances_train.json"))
    messages = [str(w.message) for w in record if issubclass(w.category, AnnotationWarning)]
    assert len(messages) == 1
    message = messages[0]
    assert "instances_train.json: dropped 6 annotations" in message
    for part in (
        "2 fewer than 3 polygon points",
        "1 zero-area box",
        "1 box outside the image",
        "1 no segmentation",
        "1 unknown category id 42",
        "1 crowd region",
    ):
        assert part in message

    _, target = dataset[0]
    assert target["boxes"].tolist() == [[3.0, 2.0, 7.0, 5.0]] * 2 + [[0.0, 1.0, 6.0, 10.0]]
    assert len(target["labels"]) == len(target["masks"]) == 3
    assert target["masks"].sum(dim=(1, 2)).tolist() == [12, 12, 12]


def test_crowd_regions_are_left_out_without_a_warning(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = CocoDataset(*write_coco(tmp_path, [annotation(1, SQUARE, iscrowd=1)]))
    _, target = dataset[0]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["masks"].shape == (0, HEIGHT, WIDTH)


def test_images_without_annotations_are_kept_unless_asked(tmp_path):
    images = [
        {"id": 7, "file_name": "a.png", "height": HEIGHT, "width": WIDTH},
        {"id": 8, "file_name": "b.png", "height": HEIGHT, "width": 2 * WIDTH},
        {"id": 9, "file_name": "c.png", "height": HEIGHT, "width": WIDTH},
    ]
    annotations = [annotation(1, SQUARE, image_id=7), annotation(2, SQUARE, image_id=9, iscrowd=1)]
    paths = write_coco(tmp_path, annotations, images=images)
    kept = CocoDataset(*paths)
    assert kept.image_ids == [7, 8, 9]
    assert kept.aspect_ratios == [WIDTH / HEIGHT, 2 * WIDTH / HEIGHT, WIDTH / HEIGHT]
    assert kept[1][1]["boxes"].shape == (0, 4)
    dropped = CocoDataset(*paths, drop_images_without_annotations=True)
    assert dropped.image_ids == [7]


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_any_png_mode_becomes_rgb_in_unit_range(tmp_path, mode):
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    if mode == "I;16":
        values = np.full((HEIGHT, WIDTH), 65535, dtype=np.uint16)
        values[:, : WIDTH // 2] = 0
        Image.fromarray(values).save(image_dir / "a.png")
    elif mode == "P":
        # An adaptive palette holds the colour exactly; the default web palette would dither it.
        rgb = Image.new("RGB", (WIDTH, HEIGHT), (200, 30, 30))
        rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(image_dir / "a.png")
    else:
        Image.new("RGB", (WIDTH, HEIGHT), (200, 30, 30)).convert(mode).save(image_dir / "a.png")
    image, _ = CocoDataset(*write_coco(tmp_path, [annotation(1, SQUARE)]))[0]
    assert image.shape == (3, HEIGHT, WIDTH) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    if mode == "I;16":
        assert image[:, :, 0].max() == 0.0 and image[:, :, -1].min() == 1.0
    else:
        assert image.std(dim=(1, 2)).max() < 1e-6  # a flat colour stays flat
        expected = [200, 30, 30] if mode != "L" else [round(0.299 * 200 + 0.587 * 30 + 0.114 * 30)] * 3
        assert torch.allclose(image[:, 0, 0], torch.tensor(expected) / 255, atol=1.5 / 255)


def test_exif_orientation_is_honoured(tmp_path):
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    stored = Image.new("RGB", (40, 20), (0, 0, 255))  # 40 wide, 20 high as stored
    stored.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: the stored left half ends up on top
    stored.save(image_dir / "a.jpg", exif=exif, quality=95)
    images = [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 20}]
    image, target = CocoDataset(*write_coco(tmp_path, [], images=images))[0]
    assert image.shape == (3, 40, 20)
    assert image[0, :16].mean() > 0.9 and image[2, :16].mean() < 0.1  # top: red
    assert image[0, 24:].mean() < 0.1 and image[2, 24:].mean() > 0.9  # bottom: blue
    assert target["masks"].shape == (0, 40, 20)


def two_bad_images(tmp_path):
    images = [
        {"id": 1, "file_name": "missing.png", "height": HEIGHT, "width": WIDTH},
        {"id": 2, "file_name": "corrupt.png", "height": HEIGHT, "width": WIDTH},
        {"id": 3, "file_name": "good.png", "height": HEIGHT, "width": WIDTH},
    ]
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    (image_dir / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    Image.new("RGB", (WIDTH, HEIGHT)).save(image_dir / "good.png")
    paths = write_coco(tmp_path, [annotation(1, SQUARE, image_id=3)], images=images)
    (image_dir / "missing.png").unlink()
    return paths


def test_missing_or_corrupt_image_raises_naming_the_file(tmp_path):
    dataset = CocoDataset(*two_bad_images(tmp_path))
    with pytest.raises(ValueError, match="missing.png"):
        dataset[0]
    with pytest.raises(ValueError, match="corrupt.png"):
        dataset[1]


def test_skip_bad_images_gives_none_warns_once_per_file_and_collate_drops_them(tmp_path):
    dataset = CocoDataset(*two_bad_images(tmp_path), skip_bad_images=True)
    with pytest.warns(BadImageWarning) as record:
        batch = [dataset[0], dataset[1], dataset[2], dataset[0], dataset[1]]
    messages = [str(w.message) for w in record if issubclass(w.category, BadImageWarning)]
    assert len(messages) == 2
    assert "missing.png" in messages[0] and "corrupt.png" in messages[1]
    assert batch[0] is None and batch[1] is None
    images, targets = collate(batch)
    assert len(images) == len(targets) == 1 and targets[0]["file_name"] == "good.png"


def test_image_of_another_size_than_the_json_says_is_an_error(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "height": HEIGHT + 1, "width": WIDTH}]
    (tmp_path / "images").mkdir()
    Image.new("RGB", (WIDTH, HEIGHT)).save(tmp_path / "images" / "a.png")
    with pytest.raises(ValueError, match="a.png.*12x10.*12x11"):
        CocoDataset(*write_coco(tmp_path, [], images=images))[0]


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "not found"),
        ("{not json", "JSON"),
        (json.dumps({"images": [], "annotations": []}), "categories"),
        (json.dumps({"images": [], "categories": [{"id": 1}]}), "annotations"),
        (json.dumps({"annotations": [], "categories": [{"id": 1}]}), "images"),
        (json.dumps({"images": {}, "annotations": [], "categories": [{"id": 1}]}), "images"),
        (
            json.dumps(
                {"images": [{"id": 1, "file_name": "a"}], "annotations": [], "categories": [{"id": 1}]}
            ),
            "width",
        ),
    ],
)
def test_bad_annotation_file_names_the_file_and_field(tmp_path, content, expected):
    path = tmp_path / "broken.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=expected) as error:
        CocoDataset(path, tmp_path)
    assert "broken.json" in str(error.value)


def test_seeded_items_replay_exactly_whatever_the_global_rng(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "height": 40, "width": 60}]
    (tmp_path / "images").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(
        tmp_path / "images" / "a.png"
    )
    transform = Compose([ResizeShortestSide((20, 30, 40, 50), 1000), RandomHorizontalFlip()])
    dataset = CocoDataset(*write_coco(tmp_path, [annotation(1, SQUARE)], images=images), transform=transform)
    torch.manual_seed(1)
    first = dataset[(0, 123)]
    torch.manual_seed(2)
    second = dataset[(0, 123)]
    assert torch.equal(first[0], second[0]) and torch.equal(first[1]["boxes"], second[1]["boxes"])
    outcomes = {
        (dataset[(0, seed)][0].shape, float(dataset[(0, seed)][1]["boxes"][0, 0])) for seed in range(20)
    }
    assert len(outcomes) > 2


def test_images_are_normalized_and_limited_as_the_model_config_says(tmp_path):
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    values = np.full((HEIGHT, WIDTH), 100, dtype=np.uint16)
    values[:, WIDTH // 2 :] = 230  # a dim 16-bit image: 100 and 230 of 65535
    Image.fromarray(values).save(image_dir / "a.png")
    paths = write_coco(tmp_path, [annotation(1, SQUARE)])
    gray = InputConfig(channels=1, pixel_mean=(0.5,), pixel_std=(0.25,))
    image, _ = CocoDataset(*paths, input_config=gray)[0]
    assert image.shape == (1, HEIGHT, WIDTH)
    assert image[0, 0, 0] == 0 and image[0, 0, -1] == 1  # "auto" -> percentile for uint16
    ranged, _ = CocoDataset(*paths, input_config=replace(gray, intensity="range"))[0]
    assert ranged.max().item() == pytest.approx(230 / 65535)
    with pytest.raises(ValueError, match=r"a.png: image is 12 x 10 pixels .* over the limit"):
        CocoDataset(*paths, max_image_pixels=100)[0]
    with pytest.warns(BadImageWarning, match="over the limit"):
        assert CocoDataset(*paths, max_image_pixels=100, skip_bad_images=True)[0] is None


def test_masks_are_decoded_without_pycocotools_numpy_2_warning():
    """pycocotools' decode warns under numpy 2 (an `__array__` without `copy`, DeprecationWarning)
    on every process's first mask; the package's decode gives the same masks without it, and
    leaves the process's warning filters as they were."""
    masks = np.zeros((2, 5, 7), np.uint8)
    masks[0, 1:4, 2:6] = 1
    masks[1, 0, :] = 1
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    filters = list(warnings.filters)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decoded = decode_rles(rles)
    assert warnings.filters == filters
    assert decoded.shape == (5, 7, 2)
    assert np.array_equal(decoded.transpose(2, 0, 1), masks)
