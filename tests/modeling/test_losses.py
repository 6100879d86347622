"""The paper's targets, sampling and losses, each equal to torchvision's counterpart."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder
from torchvision.models.detection.roi_heads import fastrcnn_loss, maskrcnn_loss
from torchvision.models.detection.rpn import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import box_iou

import maskrcnn.modeling.rpn as rpn_module
from maskrcnn import ModelConfig, build_model
from maskrcnn.config import BackboneConfig, InputConfig, RoIHeadsConfig
from maskrcnn.modeling.box_head import FCBoxHead
from maskrcnn.modeling.mask_head import FCNMaskHead, mask_loss, mask_targets
from maskrcnn.modeling.rpn import batch_iou, rpn_loss
from maskrcnn.ops import BoxCoder, MultiScaleRoIPooler
from maskrcnn.ops.matcher import Matcher
from maskrcnn.ops.sampler import BalancedSampler
from maskrcnn.structures import RoIs

STRIDES = (4, 8, 16, 32, 64)
ROI_FEATURES = ("p2", "p3", "p4", "p5")


def random_boxes(count: int, size: float, generator: torch.Generator) -> torch.Tensor:
    corners = torch.rand(count, 2, generator=generator) * size * 0.7
    extents = torch.rand(count, 2, generator=generator) * size * 0.3 + 2
    return torch.cat((corners, corners + extents), dim=1)


@pytest.mark.parametrize("allow_low_quality", [False, True])
def test_matcher_equals_torchvision(allow_low_quality):
    generator = torch.Generator().manual_seed(0)
    gt = random_boxes(6, 100, generator)
    predictions = random_boxes(300, 100, generator)
    iou = box_iou(gt, predictions)
    reference = tv_utils.Matcher(0.7, 0.3, allow_low_quality_matches=allow_low_quality)(iou)
    assert torch.equal(Matcher(0.7, 0.3, allow_low_quality)(iou), reference)
    assert (reference == -2).any() and (reference == -1).any() and (reference >= 0).any()


def test_low_quality_matches_give_every_object_an_anchor():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    anchors = torch.tensor([[0.0, 0.0, 40.0, 40.0], [50.0, 50.0, 60.0, 60.0]])  # IoU 1/16 and 0
    iou = box_iou(gt, anchors)
    assert Matcher(0.7, 0.3, allow_low_quality=True)(iou).tolist() == [0, -1]
    assert Matcher(0.7, 0.3, allow_low_quality=False)(iou).tolist() == [-1, -1]


def test_batched_matcher_equals_per_image_matching():
    generator = torch.Generator().manual_seed(3)
    predictions = random_boxes(400, 100, generator)
    gt = [random_boxes(5, 100, generator), random_boxes(2, 100, generator), torch.zeros((0, 4))]
    padded = torch.zeros(3, 5, 4)
    valid = torch.zeros(3, 5, dtype=torch.bool)
    for i, boxes in enumerate(gt):
        padded[i, : len(boxes)] = boxes
        valid[i, : len(boxes)] = True
    iou = batch_iou(padded, predictions).masked_fill(~valid[:, :, None], -1.0)
    torch.testing.assert_close(iou[0], box_iou(gt[0], predictions), rtol=0, atol=0)
    matcher = Matcher(0.7, 0.3, allow_low_quality=True)
    batched = matcher(iou, valid)
    for i, boxes in enumerate(gt):
        assert torch.equal(batched[i], matcher(box_iou(boxes, predictions)))
    assert (batched[0] >= 0).any() and (batched[1] >= 0).any() and (batched[2] == -1).all()


def test_sampler_draws_what_torchvision_draws():
    labels = torch.randint(-1, 3, (1000,), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(7)
    positive, negative = BalancedSampler(256, 0.25)(labels)
    torch.manual_seed(7)
    ref_pos, ref_neg = tv_utils.BalancedPositiveNegativeSampler(256, 0.25)([labels])
    assert torch.equal(positive.sort().values, torch.where(ref_pos[0])[0])
    assert torch.equal(negative.sort().values, torch.where(ref_neg[0])[0])
    assert len(positive) == 64 and len(negative) == 192


def test_sampler_fills_with_negatives_when_positives_are_few():
    labels = torch.zeros(1000, dtype=torch.int64)
    labels[:10] = 1
    positive, negative = BalancedSampler(512, 0.25)(labels)
    assert len(positive) == 10 and len(negative) == 502
    assert (labels[positive] == 1).all() and (labels[negative] == 0).all()


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(ModelConfig(num_classes=4, input=InputConfig(min_size=96, max_size=128))).train()


def rpn_outputs(rpn, num_images: int, generator: torch.Generator):
    """The RPN's outputs for random P2-P6 maps of a batch padded to 128 x 128."""
    assert rpn.in_features == ("p2", "p3", "p4", "p5", "p6")
    features = {
        name: torch.randn(num_images, 256, 128 // s, 128 // s, generator=generator)
        for name, s in zip(rpn.in_features, STRIDES)
    }
    return rpn(features, torch.tensor([128, 128]))


def test_rpn_targets_and_loss_equal_torchvision(tiny_model):
    generator = torch.Generator().manual_seed(3)
    rpn = tiny_model.rpn
    outputs = rpn_outputs(rpn, 2, generator)
    gt = [random_boxes(3, 128, generator), random_boxes(5, 128, generator)]

    reference = RegionProposalNetwork(
        TVAnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5),
        RPNHead(256, 3),
        0.7,
        0.3,
        256,
        0.5,
        dict(training=2000, testing=1000),
        dict(training=2000, testing=1000),
        0.7,
    )
    anchors = torch.cat(outputs.anchors)
    ref_labels, ref_matched = reference.assign_targets_to_anchors(
        [anchors, anchors], [{"boxes": b} for b in gt]
    )
    labels, regression_targets = rpn.targets(anchors, gt)
    assert torch.equal(labels, torch.stack(ref_labels))
    ref_targets = reference.box_coder.encode(ref_matched, [anchors, anchors])
    positive = labels == 1
    torch.testing.assert_close(regression_targets[positive], torch.cat(ref_targets)[positive.flatten()])

    objectness = torch.cat(outputs.objectness, dim=1).flatten()
    deltas = torch.cat(outputs.deltas, dim=1).reshape(-1, 4)
    torch.manual_seed(11)
    _, matched = rpn.assign(anchors, gt)
    ours = rpn_loss(objectness, deltas, labels, matched, anchors, rpn.box_coder, rpn.sampler)
    torch.manual_seed(11)
    ref_objectness, ref_box = reference.compute_loss(
        objectness, deltas, list(labels), list(regression_targets)
    )
    torch.testing.assert_close(ours["loss_rpn_objectness"], ref_objectness)
    torch.testing.assert_close(ours["loss_rpn_box"], ref_box)


def test_rpn_targets_are_finite_and_zero_off_the_positives_with_an_image_without_boxes(tiny_model):
    generator = torch.Generator().manual_seed(4)
    rpn = tiny_model.rpn
    anchors = torch.cat(rpn_outputs(rpn, 2, generator).anchors)
    labels, targets = rpn.targets(anchors, [torch.zeros((0, 4)), random_boxes(4, 128, generator)])
    assert torch.isfinite(targets).all()
    assert (labels[0] == 0).all() and (labels[1] == 1).any()
    assert (targets[labels != 1] == 0).all() and (targets[labels == 1] != 0).any()


def test_rpn_assign_in_chunks_of_images_equals_all_at_once(tiny_model, monkeypatch):
    generator = torch.Generator().manual_seed(5)
    rpn = tiny_model.rpn
    anchors = torch.cat(rpn_outputs(rpn, 3, generator).anchors)
    gt = [random_boxes(2, 128, generator), torch.zeros((0, 4)), random_boxes(6, 128, generator)]
    whole = rpn.assign(anchors, gt)
    # One image per chunk: the block holds fewer values than one image's IoU matrix.
    monkeypatch.setattr(rpn_module, "MATCH_BLOCK", len(anchors))
    chunked = rpn.assign(anchors, gt)
    assert (whole[0] == 1).sum() > 0
    for got, want in zip(chunked, whole):
        assert torch.equal(got, want)


def small_box_head(num_classes: int = 5) -> FCBoxHead:
    pooler = MultiScaleRoIPooler(7, STRIDES[:4])
    return FCBoxHead(pooler, ROI_FEATURES, 4, num_classes, BoxCoder((10.0, 10.0, 5.0, 5.0)), fc_dim=8)


def test_box_loss_equals_fastrcnn_loss():
    """The head encodes each foreground RoI's target from the ground-truth box it is matched to in
    its own image; torchvision's loss takes those targets encoded per image."""
    generator = torch.Generator().manual_seed(4)
    counts = (25, 15)
    gt_boxes = [random_boxes(4, 100, generator), random_boxes(3, 100, generator)]
    proposals = [random_boxes(n, 100, generator) for n in counts]
    labels = [torch.randint(0, 5, (n,), generator=generator) for n in counts]
    matched = [torch.randint(0, len(g), (n,), generator=generator) for g, n in zip(gt_boxes, counts)]
    class_logits = torch.randn(40, 5, generator=generator)
    deltas = torch.randn(40, 20, generator=generator)
    coder = TorchvisionBoxCoder((10.0, 10.0, 5.0, 5.0))
    targets = [coder.encode_single(g[m], p) for g, m, p in zip(gt_boxes, matched, proposals)]
    ref_cls, ref_box = fastrcnn_loss(class_logits, deltas, labels, targets)

    rois = RoIs(
        torch.cat(proposals),
        torch.cat([torch.full((n,), i) for i, n in enumerate(counts)]),
        torch.cat(labels),
        torch.cat(matched),
    )
    # The RoIs in any order (their images interleaved), as long as the predictions follow them.
    order = torch.randperm(40, generator=generator)
    head = small_box_head()
    ours = head.loss((class_logits[order], deltas[order]), rois[order], [{"boxes": g} for g in gt_boxes])
    assert set(ours) == {"loss_cls", "loss_box"}
    assert ref_box > 0
    torch.testing.assert_close(ours["loss_cls"], ref_cls)
    torch.testing.assert_close(ours["loss_box"], ref_box)


def test_mask_targets_and_loss_equal_maskrcnn_loss():
    generator = torch.Generator().manual_seed(5)
    gt_masks = [(torch.rand(4, 70, 90, generator=generator) > 0.5).to(torch.uint8) for _ in range(2)]
    gt_labels = [torch.tensor([1, 2, 3, 1]), torch.tensor([3, 3, 2, 1])]
    proposals = [random_boxes(12, 70, generator), random_boxes(9, 70, generator)]
    matched = [
        torch.randint(0, 4, (12,), generator=generator),
        torch.randint(0, 4, (9,), generator=generator),
    ]
    mask_logits = torch.randn(21, 4, 28, 28, generator=generator)
    reference = maskrcnn_loss(mask_logits, proposals, gt_masks, gt_labels, matched)
    labels = torch.cat([g[i] for g, i in zip(gt_labels, matched)])
    rois = RoIs(
        torch.cat(proposals),
        torch.cat([torch.full((len(p),), i) for i, p in enumerate(proposals)]),
        labels,
        torch.cat(matched),
    )
    class_logits = mask_logits[torch.arange(len(labels)), labels]
    targets = mask_targets(gt_masks, rois.image_index, rois.matched, rois.boxes, 28)
    torch.testing.assert_close(mask_loss(class_logits, targets), reference)
    # the head's loss: the same targets and loss, from the RoIs and the batch's annotations
    head = FCNMaskHead(MultiScaleRoIPooler(14, STRIDES[:4]), ROI_FEATURES, 8, 4, conv_dim=8, num_convs=1)
    losses = head.loss(class_logits, rois, [{"masks": m} for m in gt_masks])
    assert set(losses) == {"loss_mask"}
    torch.testing.assert_close(losses["loss_mask"], reference)


def test_only_the_ground_truth_class_mask_gets_gradient():
    torch.manual_seed(0)
    head = FCNMaskHead(MultiScaleRoIPooler(14, STRIDES[:4]), ROI_FEATURES, 8, 4, conv_dim=8, num_convs=2)
    pooled = torch.randn(3, 8, 14, 14).contiguous(memory_format=torch.channels_last).requires_grad_()
    labels = torch.tensor([1, 3, 3])
    rois = RoIs(torch.zeros(3, 4), torch.zeros(3, dtype=torch.int64), labels)
    targets = torch.rand(3, 28, 28)

    mask_loss(head(pooled, rois), targets).backward()
    gradients = [p.grad.clone() for p in head.parameters()] + [pooled.grad.clone()]
    touched = head.predictor.weight.grad.abs().sum(dim=(1, 2, 3)) > 0
    assert touched.tolist() == [False, True, False, True]

    # the same loss and gradients as selecting the class from every class's logits
    head.zero_grad()
    pooled.grad = None
    full = head.predictor(head.mask_features(pooled))
    reference = F.binary_cross_entropy_with_logits(full[torch.arange(3), labels], targets)
    reference.backward()
    for ours, theirs in zip(gradients, [p.grad for p in head.parameters()] + [pooled.grad]):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


def test_image_without_annotations_trains_with_zero_box_and_mask_loss(tiny_model):
    torch.manual_seed(0)
    empty = {
        "boxes": torch.zeros((0, 4)),
        "labels": torch.zeros((0,), dtype=torch.int64),
        "masks": torch.zeros((0, 96, 128), dtype=torch.uint8),
    }
    losses = tiny_model.losses([torch.rand(3, 96, 128)], [empty])
    assert (
        losses["loss_box"].item() == 0
        and losses["loss_mask"].item() == 0
        and losses["loss_rpn_box"].item() == 0
    )
    assert losses["loss_cls"].item() > 0 and losses["loss_rpn_objectness"].item() > 0
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in tiny_model.parameters() if p.grad is not None)


def test_every_gradient_has_its_parameters_strides():
    """DDP copies each gradient into a flat bucket viewed with its parameter's strides and
    warns ("Grad strides do not match bucket view strides") when they differ, even only
    in dimensions of size 1, such as those of the 1x1 mask predictor's weight."""
    torch.manual_seed(0)
    masks = torch.zeros(2, 96, 128, dtype=torch.uint8)
    masks[0, 10:60, 20:70] = 1
    masks[1, 40:90, 60:120] = 1
    boxes = torch.tensor([[20.0, 10.0, 70.0, 60.0], [60.0, 40.0, 120.0, 90.0]])
    target = {"boxes": boxes, "labels": torch.tensor([1, 3]), "masks": masks}
    narrow = BackboneConfig(
        stage_blocks=(1, 1, 1, 1), stage_channels=(64, 128, 256, 512), freeze_at=0, fpn_channels=64
    )
    heads = RoIHeadsConfig(fc_dim=128, mask_conv_dim=64, batch_size_per_image=64)
    small = InputConfig(min_size=96, max_size=128)
    model = build_model(ModelConfig(num_classes=4, backbone=narrow, roi_heads=heads, input=small))
    sum(model.train().losses([torch.rand(3, 96, 128)], [target]).values()).backward()
    trained = {name: p for name, p in model.named_parameters() if p.grad is not None}
    differ = {
        name: (p.stride(), p.grad.stride()) for name, p in trained.items() if p.grad.stride() != p.stride()
    }
    assert "roi_heads.mask_head.predictor.weight" in trained and "backbone.trunk.stem.conv.weight" in trained
    assert not differ


def test_box_coder_weights_scale_targets():
    reference = torch.tensor([[10.0, 10.0, 30.0, 50.0]])
    box = torch.tensor([[12.0, 8.0, 36.0, 60.0]])
    plain = BoxCoder((1, 1, 1, 1)).encode(box, reference)
    weighted = BoxCoder((10, 10, 5, 5)).encode(box, reference)
    torch.testing.assert_close(weighted, plain * torch.tensor([10.0, 10.0, 5.0, 5.0]))


def test_mask_targets_of_a_batch_equal_per_image_targets_for_images_of_different_sizes():
    generator = torch.Generator().manual_seed(6)
    sizes = [(70, 90), (41, 33), (60, 60), (50, 80)]
    gt_masks = [(torch.rand(3, h, w, generator=generator) > 0.5).to(torch.uint8) for h, w in sizes]
    gt_masks[2] = torch.zeros((0, 60, 60), dtype=torch.uint8)  # an image without objects
    boxes = [random_boxes(7, min(h, w) + 20, generator) for h, w in sizes]  # some cross the image edge
    boxes[2] = torch.zeros((0, 4))
    matched = [torch.randint(0, 3, (len(b),), generator=generator) for b in boxes]
    expected = torch.cat(
        [
            mask_targets([m], torch.zeros(len(b), dtype=torch.int64), i, b, 28)
            for m, i, b in zip(gt_masks, matched, boxes)
            if len(b)
        ]
    )
    # The batch's RoIs flat, their images interleaved: each reads its own image's masks.
    image_index = torch.cat([torch.full((len(b),), i) for i, b in enumerate(boxes)])
    order = torch.randperm(21, generator=generator)
    all_matched, all_boxes = torch.cat(matched), torch.cat(boxes)
    batched = mask_targets(gt_masks, image_index[order], all_matched[order], all_boxes[order], 28)
    assert batched.shape == (21, 28, 28)
    assert 0.2 < batched.mean() < 0.8
    torch.testing.assert_close(batched, expected[order], rtol=0, atol=1e-5)
    # each target comes from its own image's mask: swapping two images' masks changes them
    swapped_masks = [gt_masks[1], gt_masks[0], *gt_masks[2:]]
    swapped = mask_targets(swapped_masks, image_index, all_matched, all_boxes, 28)
    assert not torch.allclose(swapped[:7], expected[:7])
