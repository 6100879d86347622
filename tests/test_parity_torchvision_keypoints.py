"""Same weights, same inputs: our Keypoint R-CNN gives torchvision's `keypointrcnn_resnet50_fpn`
boxes, scores and keypoints."""

import pytest
import torch

import maskrcnn
from maskrcnn.structures import match_near_ties
from maskrcnn.testing import torchvision_keypoint_model


@pytest.fixture(scope="module")
def models():
    reference = torchvision_keypoint_model()
    return reference, maskrcnn.from_torchvision_keypoint(reference.state_dict())


@pytest.mark.parametrize("size, fast", [((300, 400), True), ((450, 330), False)], ids=["fast-paths", "plain"])
def test_keypoints_match_torchvision(models, size, fast):
    reference_model, ours_model = models
    assert not ours_model.config.masks and ours_model.config.keypoint_head.names[1] == "left_eye"
    image = torch.rand(3, *size, generator=torch.Generator().manual_seed(size[0]))
    with torch.no_grad():
        reference = reference_model([image])[0]
    with maskrcnn.fast_paths(fast):
        ours = ours_model.predict([image], score_threshold=0.0)[0]
    count = len(reference["boxes"])
    assert count > 10 and len(ours["boxes"]) == count and "masks" not in ours
    ours = match_near_ties(reference, ours)
    torch.testing.assert_close(ours["boxes"], reference["boxes"], rtol=0, atol=1e-3)
    torch.testing.assert_close(ours["scores"], reference["scores"], rtol=0, atol=1e-4)
    assert torch.equal(ours["labels"], reference["labels"])
    torch.testing.assert_close(ours["keypoints"], reference["keypoints"], rtol=0, atol=1e-3)
    torch.testing.assert_close(ours["keypoint_scores"], reference["keypoints_scores"], rtol=0, atol=1e-3)


def test_a_file_without_a_keypoint_head_is_refused_as_keypoint_rcnn(torchvision_maskrcnn):
    with pytest.raises(maskrcnn.CheckpointError, match="kps_score_lowres"):
        maskrcnn.from_torchvision_keypoint(torchvision_maskrcnn.state_dict())
