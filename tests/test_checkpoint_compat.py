"""Checkpoints written before the package's layout changed (commit 0f99b46) load and give the
detections that code gave, kept beside them as test data."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from maskrcnn import load_model

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints_0f99b46"
EXPECTED = json.loads((FIXTURES / "detections.json").read_text())


@pytest.mark.parametrize("name", ["fpn", "c4"])
def test_a_checkpoint_of_the_earlier_layout_gives_its_detections(name):
    model = load_model(FIXTURES / f"{name}.pt", device="cpu")
    image = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)  # as when written
    detections = model.predict(image, score_threshold=0.0)[0]
    expected = EXPECTED["detections"][name]
    assert len(expected["scores"]) == 20  # something to compare: the file's model detects
    assert detections["labels"].tolist() == expected["labels"]
    torch.testing.assert_close(detections["scores"], torch.tensor(expected["scores"]), rtol=0, atol=1e-5)
    torch.testing.assert_close(detections["boxes"], torch.tensor(expected["boxes"]), rtol=0, atol=1e-3)
    pixels = detections["masks"].flatten(1).sum(1).tolist()
    assert all(abs(a - b) <= 2 for a, b in zip(pixels, expected["mask_pixels"]))
