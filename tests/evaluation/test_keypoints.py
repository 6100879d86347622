"""The keypoint settings that follow the data: OKS sigmas from the option, the setting or COCO's
person defaults; the keypoint head's names, skeleton and count from the training set."""

import json
from types import SimpleNamespace

import pytest

from maskrcnn.config import KeypointHeadConfig
from maskrcnn.evaluation.keypoints import (
    COCO_PERSON_OKS_SIGMAS,
    keypoint_head_for_dataset,
    resolve_oks_sigmas,
)


def test_coco_person_sigmas_follow_coco_keypoint_order():
    from maskrcnn.data.coco_names import COCO_PERSON_KEYPOINTS

    by_name = dict(zip(COCO_PERSON_KEYPOINTS, COCO_PERSON_OKS_SIGMAS))
    expected = {"nose": 0.026, "eye": 0.025, "ear": 0.035, "shoulder": 0.079, "elbow": 0.072}
    expected |= {"wrist": 0.062, "hip": 0.107, "knee": 0.087, "ankle": 0.089}
    for name, sigma in by_name.items():
        assert sigma == expected[name.split("_")[-1]], name


def test_the_option_wins_then_the_setting_then_coco_for_17_keypoints():
    assert resolve_oks_sigmas(3, (0.1, 0.2, 0.3), (0.5, 0.5, 0.5)) == (0.1, 0.2, 0.3)
    assert resolve_oks_sigmas(3, None, (0.5, 0.5, 0.6)) == (0.5, 0.5, 0.6)
    assert resolve_oks_sigmas(17) == COCO_PERSON_OKS_SIGMAS
    assert resolve_oks_sigmas(17, None, (0.1,) * 17) == (0.1,) * 17


def test_sigmas_of_the_wrong_count_or_none_for_other_than_17_keypoints_name_what_to_set():
    with pytest.raises(ValueError, match=r"^--oks-sigmas 0\.1,0\.2: 2 sigmas for the 4 keypoints"):
        resolve_oks_sigmas(4, (0.1, 0.2))
    with pytest.raises(
        ValueError, match=r"^model\.keypoint_head\.oks_sigmas=\[0\.1\]: 1 sigmas for 4 keypoints"
    ):
        resolve_oks_sigmas(4, None, (0.1,))
    with pytest.raises(ValueError, match="COCO's person sigmas are for 17 keypoints, not 4") as error:
        resolve_oks_sigmas(4)
    assert "model.keypoint_head.oks_sigmas" in str(error.value) and "--oks-sigmas S1,...,S4" in str(
        error.value
    )


def dataset(path, names, skeleton=((1, 2),)):
    return SimpleNamespace(annotation_file=path, keypoint_names=tuple(names), keypoint_skeleton=skeleton)


def test_the_head_takes_the_training_sets_names_skeleton_and_count():
    head = KeypointHeadConfig(conv_dim=64, oks_sigmas=(0.1, 0.2))
    filled = keypoint_head_for_dataset(
        head, dataset("train.json", ["a", "b"]), dataset("val.json", ["a", "b"])
    )
    assert filled == KeypointHeadConfig(
        num_keypoints=2, names=("a", "b"), skeleton=((1, 2),), oks_sigmas=(0.1, 0.2), conv_dim=64
    )
    json.dumps(filled.skeleton)  # plain data, as a checkpoint's config holds it


def test_a_validation_split_of_other_keypoints_or_sigmas_of_another_count_are_refused():
    with pytest.raises(
        ValueError, match=r"^val\.json: keypoints a, c differ from those of the training set train\.json"
    ):
        keypoint_head_for_dataset(
            KeypointHeadConfig(), dataset("train.json", "ab"), dataset("val.json", "ac")
        )
    with pytest.raises(
        ValueError, match=r"^model\.keypoint_head\.oks_sigmas=\[0\.1\]: 1 sigmas, but train\.json"
    ):
        keypoint_head_for_dataset(KeypointHeadConfig(oks_sigmas=(0.1,)), dataset("train.json", "ab"))
