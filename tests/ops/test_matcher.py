"""Matching with no ground truth or no predictions: background or an empty match, never an error."""

import pytest
import torch

from maskrcnn.modeling.rpn import batch_iou
from maskrcnn.ops.matcher import BELOW_LOW, Matcher

MATCHERS = {"rpn": Matcher(0.7, 0.3, allow_low_quality=True), "roi-heads": Matcher(0.5, 0.5)}


@pytest.mark.parametrize("matcher", MATCHERS.values(), ids=MATCHERS)
@pytest.mark.parametrize("num_gt", [0, 3])
def test_no_predictions_give_an_empty_match(matcher, num_gt):
    matches = matcher(torch.rand(num_gt, 0))
    assert matches.shape == (0,)
    assert matches.dtype == torch.int64


@pytest.mark.parametrize("matcher", MATCHERS.values(), ids=MATCHERS)
def test_no_ground_truth_makes_every_prediction_background(matcher):
    matches = matcher(torch.zeros(0, 5))
    assert matches.dtype == torch.int64
    assert matches.tolist() == [BELOW_LOW] * 5


@pytest.mark.parametrize("matcher", MATCHERS.values(), ids=MATCHERS)
@pytest.mark.parametrize(
    "shape", [(2, 3, 0), (2, 0, 0), (0, 3, 0)], ids=["no-predictions", "nothing", "no-images"]
)
def test_batched_without_predictions(matcher, shape):
    valid = torch.ones(shape[:2], dtype=torch.bool)
    matches = matcher(torch.rand(shape), valid)
    assert matches.shape == (shape[0], 0)
    assert matches.dtype == torch.int64


@pytest.mark.parametrize("matcher", MATCHERS.values(), ids=MATCHERS)
def test_batched_with_no_images_or_no_ground_truth(matcher):
    assert matcher(torch.rand(0, 3, 7), torch.ones(0, 3, dtype=torch.bool)).shape == (0, 7)
    matches = matcher(torch.zeros(2, 0, 7), torch.ones(2, 0, dtype=torch.bool))
    assert matches.dtype == torch.int64
    assert matches.tolist() == [[BELOW_LOW] * 7] * 2


def test_an_image_without_ground_truth_in_a_batch_is_all_background():
    """The RPN pads an image without boxes to one invalid row of IoU -1 (see RPN.assign)."""
    predictions = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 12.0], [20.0, 20.0, 30.0, 30.0]])
    gt = torch.tensor([[[0.0, 0.0, 10.0, 11.0]], [[0.0, 0.0, 0.0, 0.0]]])
    valid = torch.tensor([[True], [False]])
    iou = batch_iou(gt, predictions).masked_fill(~valid[:, :, None], -1.0)
    matches = MATCHERS["rpn"](iou, valid)
    # IoU 10/11, 11/12 and 0 with the one box. Every prediction reaches the padding row's best
    # IoU (-1), and none may be restored as a low-quality match to it.
    assert matches.tolist() == [[0, 0, BELOW_LOW], [BELOW_LOW] * 3]
