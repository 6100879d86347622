"""Fixtures of the server's tests: a tiny model, a tiny keypoint model, a weights file."""

import pytest
from serve_helpers import tiny_model

from maskrcnn.checkpoint import save_checkpoint


@pytest.fixture(scope="session")
def model():
    return tiny_model()


@pytest.fixture(scope="session")
def keypoint_model():
    return tiny_model(keypoints=True)


@pytest.fixture(scope="session")
def weights(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("serve_weights") / "tiny.pt"
    save_checkpoint(path, model)
    return path
