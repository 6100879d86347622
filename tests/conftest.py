"""Shared fixtures."""

import pytest

from maskrcnn.testing import torchvision_reference_model


@pytest.fixture(scope="session")
def torchvision_maskrcnn():
    """torchvision's maskrcnn_resnet50_fpn in eval mode with random weights that detect things."""
    return torchvision_reference_model()
