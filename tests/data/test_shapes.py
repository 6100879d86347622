import json
import warnings

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from maskrcnn.data.coco import CocoDataset
from maskrcnn.data.shapes import make_shapes, shapes_dataset_paths


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp("shapes"), num_train=30, num_val=4, seed=0)


def files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_paths_and_layout(shapes, tmp_path):
    root = shapes["train_images"].parent
    assert shapes == shapes_dataset_paths(root)
    assert len(list(shapes["train_images"].glob("*.png"))) == 30
    assert len(list(shapes["val_images"].glob("*.png"))) == 4
    with Image.open(next(shapes["val_images"].glob("*.png"))) as image:
        assert image.size == (256, 192) and image.mode == "RGB"


def test_same_seed_gives_identical_files_and_other_seeds_differ(tmp_path):
    make_shapes(tmp_path / "a", 5, 2, seed=3)
    make_shapes(tmp_path / "b", 5, 2, seed=3)
    make_shapes(tmp_path / "c", 5, 2, seed=4)
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys() and all(a[name] != c[name] for name in a)
    # The validation images do not depend on how many training images there are.
    other = make_shapes(tmp_path / "e", 2, 2, seed=3)
    assert files(other["val_images"]) == files(tmp_path / "a" / "val")


def test_loads_with_coco_dataset_and_pycocotools(shapes):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        dataset = CocoDataset(shapes["train_annotations"], shapes["train_images"])
    assert dataset.class_names == ("__background__", "circle", "square", "triangle")
    assert dataset.category_ids == (1, 2, 3)
    assert len(dataset) == 30
    image, target = dataset[0]
    assert image.shape == (3, 192, 256)
    assert 1 <= len(target["labels"]) <= 6 and target["masks"].shape[1:] == (192, 256)
    coco = COCO(str(shapes["val_annotations"]))
    assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == ["circle", "square", "triangle"]


def test_annotations_agree_with_their_masks(shapes):
    coco = COCO(str(shapes["train_annotations"]))
    formats = set()
    for image_id in coco.getImgIds():
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert 1 <= len(annotations) <= 6
        for annotation in annotations:
            mask = coco.annToMask(annotation)
            ys, xs = np.nonzero(mask)
            assert len(ys) > 0
            x, y, w, h = annotation["bbox"]
            extent = [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
            assert np.abs(np.array([x, y, w, h]) - extent).max() <= 1
            assert annotation["area"] == mask.sum()
            assert annotation["iscrowd"] == 0 and annotation["category_id"] in (1, 2, 3)
            formats.add("polygon" if isinstance(annotation["segmentation"], list) else "rle")
            if not isinstance(annotation["segmentation"], list):
                assert isinstance(annotation["segmentation"]["counts"], str)
    assert formats == {"polygon", "rle"}


def test_visible_masks_of_one_image_do_not_overlap(shapes):
    data = json.loads(shapes["train_annotations"].read_text())
    coco = COCO(str(shapes["train_annotations"]))
    for image in data["images"][:10]:
        masks = [coco.annToMask(a) for a in coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))]
        assert np.stack(masks).sum(axis=0).max() == 1


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        make_shapes(tmp_path, -1, 0)
    with pytest.raises(ValueError):
        make_shapes(tmp_path, 1, 0, image_size=(8, 8))
