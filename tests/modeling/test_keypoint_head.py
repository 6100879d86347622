"""The keypoint head: its targets, loss and decoding against torchvision's, and a model with
keypoints (and masks) that trains, predicts and exports."""

import pytest
import torch
from torchvision.models.detection import roi_heads as torchvision_heads

from maskrcnn.modeling.keypoint_head import KeypointHead, heatmaps_to_keypoints, keypoint_targets
from maskrcnn.ops import MultiScaleRoIPooler
from maskrcnn.structures import RoIs


def boxes_and_keypoints(count: int, points: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(count, 2, generator=generator) * 100
    size = torch.rand(count, 2, generator=generator) * 80 + 1
    boxes = torch.cat((corner, corner + size), dim=1)
    # points around each box, some outside it; visibility 0, 1 or 2
    xy = corner[:, None] + (torch.rand(count, points, 2, generator=generator) * 1.4 - 0.2) * size[:, None]
    visibility = torch.randint(0, 3, (count, points, 1), generator=generator).float()
    return boxes, torch.cat((xy, visibility), dim=-1)


def test_targets_are_torchvisions_including_points_on_the_far_edges():
    boxes, keypoints = boxes_and_keypoints(40, 17)
    keypoints[0, 0, :2] = boxes[0, 2:]  # exactly on the right and bottom edges: the last cell
    keypoints[0, 0, 2] = 2
    keypoints[1, 1, :2] = boxes[1, :2]  # the top-left corner: cell 0
    keypoints[1, 1, 2] = 2
    cells, valid = keypoint_targets(keypoints, boxes, 56)
    expected, expected_valid = torchvision_heads.keypoints_to_heatmap(keypoints, boxes, 56)
    assert torch.equal(valid, expected_valid.bool())
    assert torch.equal(cells[valid], expected[valid])
    assert cells[0, 0] == 56 * 56 - 1 and cells[1, 1] == 0
    assert 0 < valid.float().mean() < 0.8  # invisible and outside points are left out


def test_the_loss_is_torchvisions():
    boxes, keypoints = boxes_and_keypoints(12, 5, seed=1)
    logits = torch.randn(12, 5, 56, 56, generator=torch.Generator().manual_seed(2))
    head = KeypointHead(MultiScaleRoIPooler(14, (4,)), ("p2",), 8, 5, conv_dim=8, num_convs=1)
    rois = RoIs(
        boxes, torch.zeros(12, dtype=torch.int64), torch.ones(12, dtype=torch.int64), torch.arange(12)
    )
    ours = head.loss(logits, rois, [{"keypoints": keypoints}])["loss_keypoint"]
    reference = torchvision_heads.keypointrcnn_loss(logits, [boxes], [keypoints], [torch.arange(12)])
    torch.testing.assert_close(ours, reference)
    # no visible keypoint: a zero loss that still reaches the logits
    hidden = keypoints.clone()
    hidden[..., 2] = 0
    logits.requires_grad_(True)
    none = head.loss(logits, rois, [{"keypoints": hidden}])["loss_keypoint"]
    none.backward()
    assert none.item() == 0 and torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("count", [0, 1, 9])
def test_decoding_is_torchvisions(count):
    boxes, _ = boxes_and_keypoints(count, 1, seed=3)
    boxes[:1, 2:] = boxes[:1, :2] + 0.4  # a box under one pixel: its map is resized to 1 x 1
    maps = torch.randn(count, 17, 56, 56, generator=torch.Generator().manual_seed(4))
    keypoints, scores = heatmaps_to_keypoints(maps, boxes)
    assert keypoints.shape == (count, 17, 3) and scores.shape == (count, 17)
    if count:
        expected, expected_scores = torchvision_heads.heatmaps_to_keypoints(maps, boxes)
        torch.testing.assert_close(keypoints, expected, rtol=0, atol=1e-4)
        torch.testing.assert_close(scores, expected_scores)
        inside = (keypoints[..., 0] >= boxes[:, None, 0] - 1) & (keypoints[..., 0] <= boxes[:, None, 2] + 1)
        assert inside.all()


def test_a_probability_score_is_the_peaks_share_of_the_heatmaps_softmax():
    generator = torch.Generator().manual_seed(3)
    maps = torch.randn(2, 3, 56, 56, generator=generator) * 2
    boxes = torch.tensor([[10.0, 20.0, 66.0, 76.0], [0.0, 0.0, 56.0, 56.0]])  # 56 px: no resizing
    points, logits = heatmaps_to_keypoints(maps, boxes)
    same, probabilities = heatmaps_to_keypoints(maps, boxes, probability=True)
    assert torch.equal(points, same)
    # at the map's own size the peak is the map's maximum: the softmax of the 56 x 56 cells there
    expected = maps.flatten(2).softmax(dim=2).amax(dim=2)
    torch.testing.assert_close(probabilities, expected)
    torch.testing.assert_close(logits, maps.flatten(2).amax(dim=2))
    assert ((probabilities > 0) & (probabilities <= 1)).all()
