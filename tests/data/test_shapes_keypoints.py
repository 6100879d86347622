"""The shapes dataset with keypoints: valid COCO person-keypoints files (pycocotools reads and
scores them), the same images and masks as without, each shape's four extreme points flagged by
the documented rule, and a flip that turns the leftmost point into the rightmost."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from maskrcnn.data.coco import CocoDataset
from maskrcnn.data.shapes import KEYPOINT_NAMES, KEYPOINT_SKELETON, SHAPES_OKS_SIGMAS, make_shapes
from maskrcnn.data.transforms import RandomHorizontalFlip

TOP, RIGHT, BOTTOM, LEFT = range(4)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """(with keypoints, without) of the same seed: 16 training and 3 validation images."""
    root = tmp_path_factory.mktemp("shapes")
    return make_shapes(root / "kp", 16, 3, seed=2, keypoints=True), make_shapes(root / "plain", 16, 3, seed=2)


def by_image(coco: COCO):
    """image id -> its annotations in file order, which is the order the shapes were drawn."""
    for image_id in coco.getImgIds():
        yield coco.imgs[image_id], coco.loadAnns(coco.getAnnIds(imgIds=image_id))


def test_the_files_are_coco_keypoints_that_pycocotools_reads_and_scores(datasets):
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(datasets[0]["train_annotations"]))
    for category in coco.loadCats(coco.getCatIds()):
        assert category["keypoints"] == list(KEYPOINT_NAMES) and category["skeleton"] == [
            list(p) for p in KEYPOINT_SKELETON
        ]
    annotations = coco.loadAnns(coco.getAnnIds())
    for annotation in annotations:
        flags = annotation["keypoints"][2::3]
        assert len(annotation["keypoints"]) == 3 * len(KEYPOINT_NAMES) and set(flags) <= {0, 1, 2}
        assert annotation["num_keypoints"] == sum(v > 0 for v in flags)
    # The ground truth as detections: COCOeval's keypoint AP is 1.
    results = [{**a, "score": 1.0} for a in annotations]
    results = [{k: r[k] for k in ("image_id", "category_id", "keypoints", "score")} for r in results]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(coco, coco.loadRes(results), "keypoints")
        evaluation.params.kpt_oks_sigmas = np.array(SHAPES_OKS_SIGMAS)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)


def test_images_and_masks_are_those_of_the_dataset_without_keypoints(datasets):
    with_keypoints, plain = datasets
    for split in ("train", "val"):
        for path in sorted(plain[f"{split}_images"].glob("*.png")):
            assert (with_keypoints[f"{split}_images"] / path.name).read_bytes() == path.read_bytes()
        a = json.loads(with_keypoints[f"{split}_annotations"].read_text())
        b = json.loads(plain[f"{split}_annotations"].read_text())
        for annotation in a["annotations"]:
            del annotation["keypoints"], annotation["num_keypoints"]
        for category in a["categories"]:
            del category["keypoints"], category["skeleton"]
        assert a["annotations"] == b["annotations"] and a["categories"] == b["categories"]
        assert a["images"] == b["images"]


def test_each_point_is_flagged_by_the_rule_and_a_visible_one_lies_on_its_visible_mask(datasets):
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(datasets[0]["train_annotations"]))
    counts = {1: 0, 2: 0}
    for image, annotations in by_image(coco):
        masks = [coco.annToMask(a).astype(bool) for a in annotations]
        for i, annotation in enumerate(annotations):
            later = np.zeros_like(masks[i])
            for mask in masks[i + 1 :]:
                later |= mask  # the visible parts of the shapes drawn later cover what they painted
            x0, y0, w, h = annotation["bbox"]
            for x, y, v in np.reshape(annotation["keypoints"], (-1, 3)):
                assert v in (1, 2)  # every shape lies inside its image: nothing is unlabelled
                assert 0 <= x <= image["width"] and 0 <= y <= image["height"]
                column, row = min(int(x), image["width"] - 1), min(int(y), image["height"] - 1)
                near = masks[i][max(row - 1, 0) : row + 2, max(column - 1, 0) : column + 2].any()
                assert v == (2 if near and not later[row, column] else 1)
                counts[int(v)] += 1
                if v == 2:  # on or within a pixel of its instance's box
                    assert x0 - 1 <= x <= x0 + w + 1 and y0 - 1 <= y <= y0 + h + 1
    assert counts[1] > 0 and counts[2] > 10 * counts[1]  # occlusion happens, and is the exception


def test_the_points_are_the_extremes_and_a_visible_one_touches_its_box_edge(datasets):
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(datasets[0]["train_annotations"]))
    for annotation in coco.loadAnns(coco.getAnnIds()):
        points = np.reshape(annotation["keypoints"], (-1, 3))
        xs, ys, flags = points[:, 0], points[:, 1], points[:, 2]
        assert ys[TOP] == ys.min() and ys[BOTTOM] == ys.max()
        assert xs[LEFT] == xs.min() and xs[RIGHT] == xs.max()
        x0, y0, w, h = annotation["bbox"]
        for k, edge, value in ((TOP, y0, ys), (BOTTOM, y0 + h, ys), (LEFT, x0, xs), (RIGHT, x0 + w, xs)):
            if flags[k] == 2:  # nothing beyond it, and its own pixels are there
                assert abs(value[k] - edge) <= 1.0, (annotation["id"], KEYPOINT_NAMES[k])


def test_a_flip_swaps_left_and_right_so_the_left_point_is_still_the_leftmost(datasets):
    paths = datasets[0]
    dataset = CocoDataset(paths["val_annotations"], paths["val_images"], keypoints=True)
    assert dataset.keypoint_flip == (TOP, LEFT, BOTTOM, RIGHT)
    flip = RandomHorizontalFlip(1.0, dataset.keypoint_flip)
    for index in range(len(dataset)):
        image, target = dataset[index]
        width = image.shape[-1]
        _, flipped = flip(image, target)
        before, after = target["keypoints"], flipped["keypoints"]
        assert after[:, LEFT, 0].tolist() == (width - before[:, RIGHT, 0]).tolist()
        assert after[:, RIGHT, 0].tolist() == (width - before[:, LEFT, 0]).tolist()
        assert torch.equal(after[:, TOP, 0], width - before[:, TOP, 0])
        assert torch.equal(after[:, [TOP, BOTTOM], 1:], before[:, [TOP, BOTTOM], 1:])
        assert (after[:, LEFT, 0] == after[:, :, 0].min(dim=1).values).all()
        assert (after[:, RIGHT, 0] == after[:, :, 0].max(dim=1).values).all()
        assert (after[:, :, 2] == before[:, dataset.keypoint_flip, 2]).all()
