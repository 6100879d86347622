"""A COCO person-keypoints file: keypoint names, skeleton and flip map from its categories, each
annotation's keypoints checked, broken ones left unlabelled and counted, bad categories refused."""

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from maskrcnn.data.coco import AnnotationWarning, CocoDataset
from maskrcnn.data.coco_keypoints import keypoint_flip_map, mirrored_name
from maskrcnn.data.coco_names import COCO_PERSON_KEYPOINTS
from maskrcnn.data.image_cache import fill_image_cache

HEIGHT, WIDTH = 20, 30
NAMES = ["nose", "left_eye", "right_eye"]
SKELETON = [[1, 2], [1, 3]]
SQUARE = [[5, 4, 15, 4, 15, 14, 5, 14]]


def write_split(tmp_path, annotations, categories=None):
    Image.new("RGB", (WIDTH, HEIGHT), (90, 120, 150)).save(tmp_path / "a.png")
    if categories is None:
        categories = [
            {"id": 1, "name": "person", "keypoints": NAMES, "skeleton": SKELETON},
            {"id": 2, "name": "ball"},
        ]
    images = [{"id": 1, "file_name": "a.png", "height": HEIGHT, "width": WIDTH}]
    path = tmp_path / "person_keypoints.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def person(ann_id, keypoints, category_id=1, **extra):
    entry = {"id": ann_id, "image_id": 1, "category_id": category_id, "segmentation": SQUARE, "iscrowd": 0}
    if keypoints is not None:
        entry["keypoints"] = keypoints
    return {**entry, **extra}


def read(path) -> CocoDataset:
    return CocoDataset(path, path.parent, keypoints=True)


def test_coco_person_keypoints_flip_left_and_right_and_keep_the_nose():
    flip = keypoint_flip_map(COCO_PERSON_KEYPOINTS)
    names = COCO_PERSON_KEYPOINTS
    assert flip[0] == 0  # nose
    for k, name in enumerate(names[1:], start=1):
        partner = names[flip[k]]
        assert partner != name and partner.split("_")[1] == name.split("_")[1]
        assert {name.split("_")[0], partner.split("_")[0]} == {"left", "right"}
        assert flip[flip[k]] == k


@pytest.mark.parametrize(
    "name, mirrored",
    [
        ("left_eye", "right_eye"),
        ("eye_right", "eye_left"),
        ("hand-left-tip", "hand-right-tip"),
        ("leftEye", "rightEye"),
        ("eyeLeft", "eyeRight"),
        ("LEFT_EAR", "RIGHT_EAR"),
        ("Right wrist", "Left wrist"),
        ("left", "right"),
        ("leftover", "leftover"),  # not the word "left"
        ("bright_spot", "bright_spot"),
        ("nose", "nose"),
    ],
)
def test_mirrored_names_exchange_the_words_left_and_right_in_their_case(name, mirrored):
    assert mirrored_name(name) == mirrored


def test_a_name_without_a_partner_maps_to_itself():
    assert keypoint_flip_map(["left_paw", "tail", "right_ear", "left_ear"]) == (0, 1, 3, 2)


def test_keypoints_become_a_g_k_3_target_in_the_boxes_pixels(tmp_path):
    path = write_split(
        tmp_path,
        [
            person(1, [10, 6, 2, 8, 5, 1, 0, 0, 0], num_keypoints=2),
            person(2, None, category_id=2),  # a category without keypoints
            person(3, [11.5, 7.25, 2, 3, 4, 0, 0, 0, 0], iscrowd=1),
        ],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = read(path)
    assert dataset.keypoint_names == tuple(NAMES) and dataset.keypoint_skeleton == ((1, 2), (1, 3))
    assert dataset.keypoint_flip == (0, 2, 1) and dataset.keypoint_category_ids == (1,)
    _, target = dataset[0]
    keypoints = target["keypoints"]
    assert keypoints.dtype == torch.float32 and keypoints.shape == (2, 3, 3)  # the crowd region is left out
    assert keypoints[0].tolist() == [[10, 6, 2], [8, 5, 1], [0, 0, 0]]
    assert keypoints[1].tolist() == [[0, 0, 0]] * 3  # the ball: unlabelled
    assert target["boxes"].tolist() == [[5, 4, 15, 14]] * 2


def test_without_keypoints_asked_for_the_target_is_the_plain_one_and_keypoints_are_not_read(tmp_path):
    path = write_split(tmp_path, [person(1, ["bad"])], [{"id": 1, "name": "person", "keypoints": 7}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = CocoDataset(path, tmp_path)
    assert "keypoints" not in dataset[0][1] and dataset.keypoint_names == () and not dataset.has_keypoints


def test_broken_keypoints_are_left_unlabelled_in_one_warning_and_the_instances_kept(tmp_path):
    good = [10, 6, 2, 8, 5, 1, 0, 0, 0]
    path = write_split(
        tmp_path,
        [
            person(1, good, num_keypoints=3),  # wrong count: repaired
            person(2, good[:6]),  # 6 values for 3 keypoints
            person(3, [10, 6, 3, 8, 5, 1, 0, 0, 0]),  # v = 3
            person(4, [float("nan"), 6, 2, 8, 5, 1, 0, 0, 0]),
            person(5, [10, "6", 2, 8, 5, 1, 0, 0, 0]),
            person(6, [10, 6, True, 8, 5, 1, 0, 0, 0]),
            person(7, None),
            person(8, [float("nan"), float("inf"), 0, 8, 5, 1, 0, 0, 0]),  # unlabelled: x, y do not matter
        ],
    )
    with pytest.warns(AnnotationWarning) as caught:
        dataset = read(path)
    (message,) = [str(w.message) for w in caught]
    assert message.startswith(str(path))
    assert "left the keypoints of 6 annotations unlabelled" in message
    for reason in (
        "1 not 9 keypoint values",
        "1 keypoint visibility not 0, 1 or 2",
        "1 non-finite keypoint",
        "2 malformed keypoints",
        "1 no keypoints",
        "recomputed num_keypoints of 1 annotation",
    ):
        assert reason in message, reason
    keypoints = dataset[0][1]["keypoints"]
    assert len(keypoints) == 8  # every instance kept, for its box and mask
    assert keypoints[0].tolist() == [[10, 6, 2], [8, 5, 1], [0, 0, 0]]
    assert (keypoints[1:7] == 0).all()
    assert keypoints[7].tolist() == [[0, 0, 0], [8, 5, 1], [0, 0, 0]]


@pytest.mark.parametrize(
    "categories, expected",
    [
        (
            [
                {"id": 1, "name": "person", "keypoints": NAMES},
                {"id": 4, "name": "cat", "keypoints": ["tail"]},
            ],
            r"categories 'person' \(id 1\) and 'cat' \(id 4\) list different keypoints",
        ),
        (
            [{"id": 1, "name": "person", "keypoints": "nose"}],
            r"field 'categories\[0\]\.keypoints' must be a list",
        ),
        ([{"id": 1, "name": "p", "keypoints": ["a", "a"]}], r"'categories\[0\]\.keypoints' repeats .*'a'"),
        (
            [{"id": 1, "name": "p", "keypoints": NAMES, "skeleton": [[1, 4]]}],
            r"field 'categories\[0\]\.skeleton\[0\]' must join two keypoints numbered 1 to 3",
        ),
        (
            [{"id": 1, "name": "p", "keypoints": NAMES, "skeleton": [[0, 1]]}],
            r"'categories\[0\]\.skeleton\[0\]'.*1-based",
        ),
        ([{"id": 1, "name": "p", "keypoints": NAMES, "skeleton": {"a": 1}}], r"'categories\[0\]\.skeleton'"),
        ([{"id": 1, "name": "thing"}], r"no category has 'keypoints'"),
    ],
)
def test_bad_keypoint_categories_fail_naming_the_file_and_the_field(tmp_path, categories, expected):
    path = write_split(tmp_path, [], categories)
    with pytest.raises(ValueError, match=expected) as error:
        read(path)
    assert str(error.value).startswith(f"{path}: ")


def test_categories_with_the_same_keypoints_share_them_and_their_skeletons(tmp_path):
    categories = [
        {"id": 1, "name": "a", "keypoints": NAMES, "skeleton": [[1, 2]]},
        {"id": 2, "name": "b", "keypoints": NAMES, "skeleton": [[2, 1], [2, 3]]},
    ]
    dataset = read(write_split(tmp_path, [person(1, [1, 1, 2] * 3, category_id=2)], categories))
    assert dataset.keypoint_skeleton == ((1, 2), (2, 3)) and dataset.keypoint_category_ids == (1, 2)
    assert dataset[0][1]["keypoints"][0, :, 2].tolist() == [2, 2, 2]


def test_cached_keypoints_are_the_same_and_a_sample_does_not_change_the_cache(tmp_path):
    path = write_split(tmp_path, [person(1, [10, 6, 2, 8, 5, 1, 0, 0, 0])])
    plain, cached = read(path), read(path)
    fill_image_cache(cached, 2**30)
    assert cached.image_cache
    first = cached[0][1]["keypoints"]
    first += 100  # the caller's copy
    assert torch.equal(cached[0][1]["keypoints"], plain[0][1]["keypoints"])
    np.testing.assert_array_equal(plain[0][1]["keypoints"][0, 0].numpy(), [10, 6, 2])
