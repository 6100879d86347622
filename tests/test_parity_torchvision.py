"""Same weights, same inputs: our Mask R-CNN gives torchvision's detections."""

import pytest
import torch

import maskrcnn
from maskrcnn.structures import match_near_ties


@pytest.fixture(scope="module")
def models(torchvision_maskrcnn):
    return torchvision_maskrcnn, maskrcnn.from_torchvision(torchvision_maskrcnn.state_dict())


@pytest.fixture(params=[True, False], ids=["fast-paths", "plain-pytorch"])
def fast_paths(request):
    """Each comparison with our fast paths on, and off (the plain-PyTorch model); the switch is
    read as the ops run, so the one model serves both. Restored after the test."""
    with maskrcnn.fast_paths(request.param):
        yield request.param


def assert_same_detections(reference: dict, ours: dict) -> None:
    count = len(reference["boxes"])
    assert count > 10, "the reference model should detect something for the comparison to mean anything"
    assert len(ours["boxes"]) == count
    ours = match_near_ties(reference, ours)
    torch.testing.assert_close(ours["boxes"], reference["boxes"], rtol=0, atol=1e-3)
    torch.testing.assert_close(ours["scores"], reference["scores"], rtol=0, atol=1e-4)
    assert torch.equal(ours["labels"], reference["labels"])
    reference_masks = reference["masks"][:, 0] > 0.5
    assert ours["masks"].dtype == torch.bool
    assert ours["masks"].shape == reference_masks.shape
    assert reference_masks.float().mean() > 0.001, "masks should not be empty"
    agreement = (ours["masks"] == reference_masks).float().mean().item()
    assert agreement >= 0.999


def run_both(models, images):
    reference_model, our_model = models
    with torch.no_grad():
        reference = reference_model(images)
    ours = our_model.predict(images, score_threshold=0.0)  # all that pass 0.05, as torchvision returns
    return reference, ours


@pytest.mark.parametrize(
    "size", [(480, 640), (333, 500), (300, 200)], ids=["landscape", "odd", "small-portrait"]
)
def test_single_image_matches_torchvision(models, size, fast_paths):
    generator = torch.Generator().manual_seed(size[0] * 7 + size[1])
    image = torch.rand(3, *size, generator=generator)
    reference, ours = run_both(models, [image])
    assert_same_detections(reference[0], ours[0])
    assert ours[0]["masks"].shape[-2:] == size


def test_batch_of_two_sizes_matches_torchvision(models, fast_paths):
    generator = torch.Generator().manual_seed(5)
    images = [torch.rand(3, 400, 600, generator=generator), torch.rand(3, 500, 375, generator=generator)]
    reference, ours = run_both(models, images)
    for reference_image, our_image in zip(reference, ours):
        assert_same_detections(reference_image, our_image)
