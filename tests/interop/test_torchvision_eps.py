"""torchvision files load with the BatchNorm eps their model was trained with: 1e-5 for a model
built without pre-trained weights (trainable nn.BatchNorm2d, whose num_batches_tracked entries
say so), 0 for COCO_V1's FrozenBatchNorm, and the caller's norm_eps where the file cannot tell."""

import pytest
import torch

import maskrcnn
from maskrcnn.checkpoint import save_checkpoint
from maskrcnn.interop.load import load_model
from maskrcnn.structures import match_near_ties
from maskrcnn.testing import frozen_batchnorm

# Small enough for a test, and the same on both sides: neither model resizes the image.
HEIGHT, WIDTH = 128, 160
# Same weights, other kernels: boxes within 0.01 px and scores within 1e-4 (near-equal scores
# may come in either order).
BOX_TOLERANCE, SCORE_TOLERANCE = 1e-2, 1e-4
# 100 detections of random weights, as many as the cap allows: a warning says so
pytestmark = pytest.mark.filterwarnings("ignore::maskrcnn.modeling.mask_rcnn.DetectionCapWarning")


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    """Two bright shapes on a noisy dark background."""
    generator = torch.Generator().manual_seed(0)
    image = 0.15 + 0.1 * torch.rand(3, HEIGHT, WIDTH, generator=generator)
    image[:, 20:70, 30:100] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    rows, cols = torch.meshgrid(torch.arange(HEIGHT), torch.arange(WIDTH), indexing="ij")
    image[:, (rows - 90) ** 2 + (cols - 115) ** 2 < 500] = torch.tensor([0.1, 0.8, 0.2])[:, None]
    return image


@pytest.fixture(scope="module")
def trainable_bn(image) -> torch.nn.Module:
    """torchvision's Mask R-CNN built without pre-trained weights (nn.BatchNorm2d, eps 1e-5),
    in eval mode, with the BatchNorm statistics of a pass over `image`: real statistics, some of
    them small, where eps 1e-5 against 0 moves the detections."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=HEIGHT, max_size=WIDTH
    )
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a cumulative average: one pass gives its statistics
    model.train()
    with torch.no_grad():
        model.backbone(model.transform([image])[0].tensors)
        predictor = model.roi_heads.box_predictor
        predictor.cls_score.weight.normal_(0, 0.02)
        predictor.cls_score.bias.copy_(torch.tensor([0.0, 1.0, 0.5]))  # foreground wins
    return model.eval()


def torchvision_detections(model, image) -> dict:
    with torch.no_grad():
        return model([image])[0]


def our_detections(path_or_model, image, **load) -> dict:
    model = path_or_model if isinstance(path_or_model, torch.nn.Module) else load_model(path_or_model, **load)
    model.preprocessor.min_size, model.preprocessor.max_size = HEIGHT, WIDTH
    return model.predict([image], score_threshold=0.0)[0]  # all that pass 0.05, as torchvision's


def differences(reference: dict, ours: dict) -> tuple[int, float, float]:
    """(count difference, max box difference (px), max score difference) of the detections in
    order (near ties matched as `tests/test_parity_torchvision.py` does)."""
    count = len(reference["boxes"])
    if len(ours["boxes"]) != count:
        return abs(len(ours["boxes"]) - count), float("inf"), float("inf")
    ours = match_near_ties(reference, ours, SCORE_TOLERANCE, BOX_TOLERANCE)
    boxes = (ours["boxes"] - reference["boxes"]).abs().max().item()
    return 0, boxes, (ours["scores"] - reference["scores"]).abs().max().item()


def assert_same(reference: dict, ours: dict) -> None:
    assert len(reference["boxes"]) > 10, "the reference should detect something to compare"
    count, boxes, scores = differences(reference, ours)
    assert count == 0 and boxes <= BOX_TOLERANCE and scores <= SCORE_TOLERANCE, (count, boxes, scores)
    ours = match_near_ties(reference, ours, SCORE_TOLERANCE, BOX_TOLERANCE)
    assert torch.equal(ours["labels"], reference["labels"])
    agreement = (ours["masks"] == (reference["masks"][:, 0] > 0.5)).float().mean().item()
    assert agreement >= 0.999


def assert_differ(reference: dict, ours: dict) -> None:
    count, boxes, scores = differences(reference, ours)
    assert count or boxes > 0.1 or scores > 1e-3, ("the other eps should move the detections", boxes, scores)


def test_a_state_dict_with_trainable_batchnorm_loads_with_eps_1e5(trainable_bn, image, tmp_path):
    path = tmp_path / "scratch.pth"
    state_dict = trainable_bn.state_dict()
    assert any(key.endswith(".num_batches_tracked") for key in state_dict)
    torch.save(state_dict, path)
    reference = torchvision_detections(trainable_bn, image)

    model = load_model(path, device="cpu")
    assert model.config.backbone.norm_eps == 1e-5
    assert_same(reference, our_detections(model, image))
    assert maskrcnn.from_torchvision(state_dict).config.backbone.norm_eps == 1e-5
    # COCO_V1's eps, forced: other detections (the test can tell the two apart)
    assert_differ(reference, our_detections(path, image, device="cpu", norm_eps=0.0))


def test_frozen_batchnorm_files_load_with_eps_0_or_the_one_given(trainable_bn, image, tmp_path):
    """A FrozenBatchNorm file (no num_batches_tracked) of eps 1e-5, as fine-tuning from an
    ImageNet trunk (weights_backbone=...) writes it: eps 0 by default (COCO_V1's, which the file
    cannot be told from), torchvision's detections with norm_eps=1e-5."""
    import copy

    frozen = frozen_batchnorm(copy.deepcopy(trainable_bn)).eval()
    state_dict = frozen.state_dict()
    assert not any(key.endswith(".num_batches_tracked") for key in state_dict)
    path = tmp_path / "fine_tuned.pth"
    torch.save(state_dict, path)
    reference = torchvision_detections(frozen, image)

    assert load_model(path, device="cpu").config.backbone.norm_eps == 0.0
    assert_differ(reference, our_detections(path, image, device="cpu"))
    assert_same(reference, our_detections(path, image, device="cpu", norm_eps=1e-5))
    model = maskrcnn.from_torchvision(state_dict, norm_eps=1e-5)
    assert model.config.backbone.norm_eps == 1e-5
    # the commands' route (README): saved once as a maskrcnn checkpoint, which holds its eps
    save_checkpoint(tmp_path / "model.pt", model)
    assert load_model(tmp_path / "model.pt", device="cpu").config.backbone.norm_eps == 1e-5


def test_norm_eps_is_refused_where_the_file_says_its_model(tmp_path):
    from maskrcnn.testing import tiny_model_config

    save_checkpoint(tmp_path / "ours.pt", maskrcnn.build_model(tiny_model_config()))
    with pytest.raises(maskrcnn.CheckpointError, match=r"ours.pt: norm_eps is for torchvision files only"):
        load_model(tmp_path / "ours.pt", norm_eps=1e-5)
    with pytest.raises(ValueError, match=r"norm_eps=-1.0: expected a number >= 0"):
        load_model(tmp_path / "ours.pt", norm_eps=-1.0)
