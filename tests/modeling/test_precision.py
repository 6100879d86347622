"""bfloat16 inference: the same detections as float32, within bfloat16's rounding."""

import pytest
import torch
from torchvision.ops import box_iou

import maskrcnn


@pytest.fixture(scope="module")
def model(torchvision_maskrcnn):
    return maskrcnn.from_torchvision(torchvision_maskrcnn.state_dict())


def test_bf16_detections_match_fp32_detections(model):
    image = torch.rand(3, 320, 400, generator=torch.Generator().manual_seed(3))
    (full,) = model.predict(image, score_threshold=0.0)
    (half,) = model.predict(image, precision="bf16", score_threshold=0.0)
    assert half["boxes"].dtype == torch.float32 and half["scores"].dtype == torch.float32
    assert half["masks"].dtype == torch.bool and half["masks"].shape == full["masks"].shape
    # The 100-detection cap cuts this random model's long tail of near-equal scores at a
    # different place in each precision: compare the 30 highest-scoring detections.
    confident = torch.zeros_like(full["scores"], dtype=torch.bool)
    confident[full["scores"].argsort(descending=True)[:30]] = True
    assert full["scores"][confident].min() > 0.5, "the comparison needs confident float32 detections"
    iou = box_iou(full["boxes"][confident], half["boxes"])
    same_label = full["labels"][confident][:, None] == half["labels"][None, :]
    best = (iou * same_label).max(dim=1)
    # bfloat16 keeps 8 bits of mantissa: boxes move by a fraction of a pixel, scores by ~1e-2
    assert (best.values > 0.9).float().mean() >= 0.9
    matched = best.values > 0.9
    score_gap = (full["scores"][confident][matched] - half["scores"][best.indices[matched]]).abs()
    assert score_gap.max() < 0.05
    masks_full = full["masks"][confident][matched]
    masks_half = half["masks"][best.indices[matched]]
    assert (masks_full == masks_half).float().mean() > 0.99


def test_unknown_precision_is_rejected_by_name(model):
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16, auto, got 'fp8'"):
        model.predict(torch.rand(3, 64, 64), precision="fp8")
