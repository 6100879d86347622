"""The trainer's keypoint data: training samples carry keypoints resized and flipped with their
boxes, and a keypoint run whose data or sigmas cannot work fails before the first step."""

import json

import pytest
import torch

from maskrcnn.data.coco import CocoDataset
from maskrcnn.data.shapes import make_shapes
from maskrcnn.data.transforms import resized_size
from maskrcnn.engine import trainer, training_data, training_setup
from maskrcnn.engine.distributed import Context
from maskrcnn.testing import shapes_training_config

LEFT, RIGHT = 3, 1  # shapes' keypoints: top, right, bottom, left
SIGMAS = "model.keypoint_head.oks_sigmas=[0.05,0.05,0.05,0.05]"
KEYPOINT_MODEL = ("model.keypoints=true", "model.keypoint_head.num_keypoints=4", SIGMAS)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    make_shapes(root / "kp", 4, 2, seed=5, keypoints=True)
    make_shapes(root / "plain", 2, 1, seed=5)
    return root


def test_training_samples_have_keypoints_resized_and_flipped_with_their_boxes(shapes, tmp_path):
    config = shapes_training_config(shapes / "kp", tmp_path, *KEYPOINT_MODEL, "data.flip_probability=1.0")
    dataset, _ = training_data.build_training_data(config, Context(0, 1, torch.device("cpu")), 0)
    raw = CocoDataset(
        shapes / "kp" / "annotations" / "instances_train.json", shapes / "kp" / "train", keypoints=True
    )
    for index in range(len(dataset)):
        image, target = dataset[(index, 0)]
        _, original = raw[index]
        height, width = image.shape[1:]
        assert [height, width] == resized_size((192, 256), 128, 176).tolist()
        scale = torch.tensor([width / 256, height / 192])
        before, after = original["keypoints"], target["keypoints"]
        # Flipped: the new left point is the mirror of the old right one, scaled as the boxes are.
        torch.testing.assert_close(after[:, LEFT, 0], width - before[:, RIGHT, 0] * scale[0])
        torch.testing.assert_close(after[:, LEFT, 1], before[:, RIGHT, 1] * scale[1])
        assert torch.equal(after[:, LEFT, 2], before[:, RIGHT, 2])
        torch.testing.assert_close(target["boxes"][:, 0], width - original["boxes"][:, 2] * scale[0])
        assert (after[:, LEFT, 0] == after[:, :, 0].min(dim=1).values).all()
    plain = shapes_training_config(shapes / "kp", tmp_path)
    dataset, _ = training_data.build_training_data(plain, Context(0, 1, torch.device("cpu")), 0)
    assert "keypoints" not in dataset[(0, 0)][1]


def test_a_training_set_without_keypoints_fails_before_the_first_step(shapes, tmp_path, monkeypatch):
    monkeypatch.setattr(training_setup, "build_model", lambda *a, **k: pytest.fail("the model was built"))
    config = shapes_training_config(shapes / "plain", tmp_path / "run", *KEYPOINT_MODEL)
    with pytest.raises(ValueError, match=r"instances_train\.json: no category has 'keypoints'"):
        trainer.train(config)


def test_keypoints_without_their_sigmas_fail_before_the_first_step(shapes, tmp_path, monkeypatch):
    monkeypatch.setattr(training_setup, "build_model", lambda *a, **k: pytest.fail("the model was built"))
    config = shapes_training_config(shapes / "kp", tmp_path / "run", "model.keypoints=true")
    with pytest.raises(
        ValueError, match="COCO's person sigmas are for 17 keypoints, not 4: set model.keypoint_head"
    ):
        trainer.train(config)


def test_a_validation_split_of_other_keypoints_fails_before_the_first_step(shapes, tmp_path, monkeypatch):
    monkeypatch.setattr(training_setup, "build_model", lambda *a, **k: pytest.fail("the model was built"))
    val = json.loads((shapes / "kp" / "annotations" / "instances_val.json").read_text())
    for category in val["categories"]:
        category["keypoints"] = ["north", "east", "south", "west"]
    other = tmp_path / "other_val.json"
    other.write_text(json.dumps(val))
    config = shapes_training_config(
        shapes / "kp", tmp_path / "run", *KEYPOINT_MODEL, f"data.val_json={other}"
    )
    with pytest.raises(ValueError, match=r"other_val\.json: keypoints north, east, south, west differ"):
        trainer.train(config)
