"""Shared fixtures."""

import pytest

from maskrcnn.fast_path_switch import fast_paths
from maskrcnn.testing import torchvision_reference_model


@pytest.fixture(autouse=True)
def _fast_paths_on():
    """Every test starts with the fast paths on, whatever MASKRCNN_FAST_PATHS says (tests of
    the fast ops check that they ran), and one that turns them off cannot leak it to the next.
    Tests of the plain model turn them off themselves (tests/test_parity_torchvision.py)."""
    with fast_paths(True):
        yield


@pytest.fixture(scope="session")
def torchvision_maskrcnn():
    """torchvision's maskrcnn_resnet50_fpn in eval mode with random weights that detect things."""
    return torchvision_reference_model()


def _nuclei_image(height: int = 64, width: int = 80, seed: int = 0, count: int = 4):
    """A 16-bit fluorescence-like image: background ~100, round nuclei ~200-235, camera noise.

    Returns (image (H, W) uint16, nuclei as (center_y, center_x, radius) tuples, nucleus mask
    (H, W) bool). The values fill a small part of uint16's range, as a 12- or 16-bit camera's do.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    values = 100 + rng.normal(0, 3, size=(height, width))
    rows, cols = np.mgrid[:height, :width]
    nuclei, mask = [], np.zeros((height, width), dtype=bool)
    for _ in range(count):
        radius = int(rng.integers(5, 9))
        center_y = int(rng.integers(radius + 1, height - radius - 1))
        center_x = int(rng.integers(radius + 1, width - radius - 1))
        inside = (rows - center_y) ** 2 + (cols - center_x) ** 2 <= radius**2
        values[inside] = rng.uniform(200, 230) + rng.normal(0, 2, size=int(inside.sum()))
        nuclei.append((center_y, center_x, radius))
        mask |= inside
    return np.clip(np.round(values), 0, 235).astype(np.uint16), nuclei, mask


@pytest.fixture
def nuclei_image():
    """The factory `_nuclei_image(height, width, seed, count)`."""
    return _nuclei_image


@pytest.fixture
def any_size(monkeypatch):
    """Small test maps take the convolution's matrix-product path too (ops/conv.py)."""
    from maskrcnn.ops import conv as conv_module

    for limit in ("MIN_ROWS", "MIN_CELLS", "MIN_CHANNELS"):
        monkeypatch.setattr(conv_module, limit, 0)


# Long enough for clear detections on shapes images (mask AP about 30 on 2 CPU cores), short
# enough for the suite: about a minute.
TRAINED_SHAPES_ITERATIONS = 800


@pytest.fixture(scope="session")
def trained_shapes_run(tmp_path_factory):
    """A shapes model trained from scratch, shared by the tests that need real detections
    (tiled inference, the server and its page): {"weights": model_final.pt, "images": a folder
    of 128x128 validation images, and make_shapes' paths (train/val images and annotations)}."""
    from maskrcnn.data.shapes import make_shapes
    from maskrcnn.engine.trainer import train
    from maskrcnn.testing import shapes_training_config

    root = tmp_path_factory.mktemp("trained_shapes")
    paths = make_shapes(root / "shapes", 64, 8, image_size=(128, 128))
    config = shapes_training_config(
        root / "shapes",
        root / "run",
        f"solver.max_iter={TRAINED_SHAPES_ITERATIONS}",
        f"solver.steps=[{TRAINED_SHAPES_ITERATIONS * 4 // 5}]",
        "solver.base_lr=0.02",
        "solver.warmup_iters=20",
        "solver.log_period=100",
        f"solver.checkpoint_period={TRAINED_SHAPES_ITERATIONS}",
        "data.val_json=''",
        "data.val_images=''",
    )
    train(config, overwrite=True)
    return {"weights": root / "run" / "model_final.pt", "images": root / "shapes" / "val", **paths}


@pytest.fixture(scope="session")
def trained_shapes_weights(trained_shapes_run):
    return trained_shapes_run["weights"]


@pytest.fixture(scope="session")
def trained_shapes_images(trained_shapes_run):
    return trained_shapes_run["images"]
