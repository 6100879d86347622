"""The inference and training fast paths compute what the plain layers compute."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

from maskrcnn.fast_path_switch import counting
from maskrcnn.modeling.box_head import FCBoxHead
from maskrcnn.modeling.mask_head import FCNMaskHead, upsample_2x2
from maskrcnn.modeling.norm import FrozenBatchNorm2d, GroupNorm, conv_norm
from maskrcnn.modeling.rpn import RPNHead
from maskrcnn.modeling.weight_cache import inference_pass
from maskrcnn.ops import BoxCoder, MultiScaleRoIPooler, fast_paths
from maskrcnn.structures import RoIs
from maskrcnn.testing import randomize_norm

STRIDES = (4, 8, 16, 32)
IN_FEATURES = ("p2", "p3", "p4", "p5")


def box_head(in_channels: int, resolution: int, fc_dim: int, num_classes: int = 3) -> FCBoxHead:
    pooler = MultiScaleRoIPooler(resolution, STRIDES)
    return FCBoxHead(pooler, IN_FEATURES, in_channels, num_classes, BoxCoder((10.0, 10.0, 5.0, 5.0)), fc_dim)


def mask_head(in_channels: int, num_classes: int, conv_dim: int, num_convs: int) -> FCNMaskHead:
    pooler = MultiScaleRoIPooler(14, STRIDES)
    return FCNMaskHead(pooler, IN_FEATURES, in_channels, num_classes, conv_dim, num_convs)


@pytest.mark.parametrize("bias", [False, True])
def test_folded_norm_equals_conv_then_norm_with_gradients(bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=bias)
    norm = randomize_norm(FrozenBatchNorm2d(8))
    x = torch.randn(2, 6, 11, 9, requires_grad=True)
    expected = norm(conv(x))
    expected.square().sum().backward()
    expected_grads = (x.grad.clone(), conv.weight.grad.clone())
    x.grad = None
    conv.weight.grad = None
    folded = conv_norm(conv, norm, x)
    folded.square().sum().backward()
    torch.testing.assert_close(folded, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, expected_grads[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(conv.weight.grad, expected_grads[1], rtol=1e-4, atol=1e-4)


def test_fold_is_computed_once_per_inference_pass():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 1, bias=False)
    norm = randomize_norm(FrozenBatchNorm2d(4))
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        before = conv_norm(conv, norm, x)
        conv.weight.mul_(2)
        # outside a pass nothing is kept: the next call folds the changed weight
        torch.testing.assert_close(conv_norm(conv, norm, x), norm(conv(x)))
        assert not torch.allclose(conv_norm(conv, norm, x), before)
        with inference_pass():
            first = conv_norm(conv, norm, x)
            # (a pass promises unchanged parameters; a change shows that the fold was kept)
            conv.weight.mul_(2)
            with inference_pass():  # a nested pass joins the outer one
                torch.testing.assert_close(conv_norm(conv, norm, x), first)
            torch.testing.assert_close(conv_norm(conv, norm, x), first)
        torch.testing.assert_close(conv_norm(conv, norm, x), norm(conv(x)))  # a new pass folds anew
    assert "_folded_conv" not in str(norm.state_dict().keys())


@pytest.mark.parametrize(
    "update",
    ["fused_sgd", "foreach_sgd", "data", "in_place", "load_state_dict", "norm_buffer"],
)
def test_fold_follows_every_kind_of_update_between_passes(update):
    """Fused optimizers and writes through .data change a parameter without bumping its
    version counter: a fold cached across passes would then be stale."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
    norm = randomize_norm(FrozenBatchNorm2d(4))
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad(), inference_pass():
        before = conv_norm(conv, norm, x)
    if update in ("fused_sgd", "foreach_sgd"):
        options = {"fused": True} if update == "fused_sgd" else {"foreach": True}
        optimizer = torch.optim.SGD(conv.parameters(), lr=0.5, momentum=0.9, **options)
        conv_norm(conv, norm, x).square().sum().backward()
        optimizer.step()
    with torch.no_grad():
        if update == "data":
            conv.weight.data.mul_(2)
        elif update == "in_place":
            conv.weight.add_(1)
        elif update == "load_state_dict":
            conv.load_state_dict({"weight": torch.randn_like(conv.weight)})
        elif update == "norm_buffer":
            norm.running_var.data.fill_(4.0)
        with inference_pass():
            after = conv_norm(conv, norm, x)
        torch.testing.assert_close(after, norm(conv(x)), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, after)


def test_non_frozen_norms_are_applied_as_layers():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3, padding=1)
    norm = nn.GroupNorm(2, 8)
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(conv_norm(conv, norm, x), norm(conv(x)))


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_upsample_2x2_equals_transposed_conv_with_gradients(channels_last, relu):
    torch.manual_seed(0)
    deconv = nn.ConvTranspose2d(5, 7, 2, stride=2)
    x = torch.randn(3, 5, 4, 6)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    expected = deconv(x).relu() if relu else deconv(x)
    expected.square().sum().backward()
    expected_grads = (x.grad.clone(), deconv.weight.grad.clone(), deconv.bias.grad.clone())
    x.grad = None
    deconv.zero_grad()
    out = upsample_2x2(deconv, x, relu=relu)
    out.square().sum().backward()
    assert out.shape == (3, 7, 8, 12)
    assert out.is_contiguous(memory_format=torch.channels_last)
    if relu:
        assert (out == 0).any() and (out > 0).any()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip((x.grad, deconv.weight.grad, deconv.bias.grad), expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_box_head_equals_torchvision_two_mlp_head_through_the_state_dict():
    torch.manual_seed(0)
    theirs = TwoMLPHead(6 * 3 * 3, 16)
    predictor = FastRCNNPredictor(16, 4)
    theirs_state = {**theirs.state_dict(), **predictor.state_dict()}
    head = box_head(in_channels=6, resolution=3, fc_dim=16, num_classes=4)
    head.load_state_dict(theirs_state)
    pooled = torch.randn(5, 6, 3, 3)
    expected = theirs(pooled)
    expected_logits, expected_deltas = predictor(expected)
    for layout in (torch.contiguous_format, torch.channels_last):
        torch.testing.assert_close(head.box_features(pooled.contiguous(memory_format=layout)), expected)
        class_logits, box_deltas = head(pooled.contiguous(memory_format=layout))
        torch.testing.assert_close(class_logits, expected_logits)
        torch.testing.assert_close(box_deltas, expected_deltas)
    # saved in the checkpoint order: torchvision's head loads our state dict unchanged
    assert set(head.state_dict()) == set(theirs_state)
    for key, value in head.state_dict().items():
        torch.testing.assert_close(value, theirs_state[key], rtol=0, atol=0)
    # internally fc6 reads (S, S, C) rows: the stored weight is a reordering of theirs
    assert not torch.equal(head.fc6.weight, theirs.fc6.weight)


@pytest.mark.parametrize("channels_last", [False, True])
def test_box_features_off_the_fast_path_agree_with_gradients(channels_last):
    """On: fc6 reads the permuted (S, S, C) rows; off: F.linear on (C, S, S) rows with the
    weight in checkpoint order. Both give the same features and gradients."""
    torch.manual_seed(0)
    head = box_head(in_channels=6, resolution=3, fc_dim=16)
    pooled = torch.randn(5, 6, 3, 3)
    if channels_last:
        pooled = pooled.contiguous(memory_format=torch.channels_last)
    pooled.requires_grad_(True)
    grad = torch.randn(5, 16)
    parameters = (pooled, head.fc6.weight, head.fc6.bias, head.fc7.weight)
    fast = head.box_features(pooled)
    fast_grads = torch.autograd.grad(fast, parameters, grad)
    with fast_paths(False):
        plain = head.box_features(pooled)
    plain_grads = torch.autograd.grad(plain, parameters, grad)
    assert (fast > 0).any()
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)
    for got, want in zip(fast_grads, plain_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_box_head_state_dict_round_trip_and_bad_shape():
    torch.manual_seed(0)
    head, other = box_head(4, 2, 8), box_head(4, 2, 8)
    other.load_state_dict(head.state_dict())
    torch.testing.assert_close(other.fc6.weight, head.fc6.weight, rtol=0, atol=0)
    # the live variables (as tracers ask for them) come and go as they are
    assert head.state_dict(keep_vars=True)["fc6.weight"] is head.fc6.weight
    third = box_head(4, 2, 8)
    third.load_state_dict(head.state_dict(keep_vars=True))
    torch.testing.assert_close(third.fc6.weight, head.fc6.weight, rtol=0, atol=0)
    bad = dict(head.state_dict(), **{"fc6.weight": torch.zeros(8, 15)})
    with pytest.raises(RuntimeError, match="fc6.weight"):
        other.load_state_dict(bad)


def test_mask_probabilities_of_the_labelled_class_only_equal_the_full_head():
    torch.manual_seed(0)
    head = mask_head(in_channels=8, num_classes=5, conv_dim=6, num_convs=2)
    nn.init.normal_(head.predictor.weight, std=0.5)
    nn.init.normal_(head.predictor.bias, std=0.5)
    pooled = torch.randn(7, 8, 4, 4).contiguous(memory_format=torch.channels_last)
    labels = torch.tensor([1, 4, 2, 2, 3, 1, 4])
    rois = RoIs(torch.zeros(7, 4), torch.zeros(7, dtype=torch.int64), labels)
    every_class = head.predictor(head.mask_features(pooled))
    expected = every_class[torch.arange(7), labels].sigmoid()
    probs = head.predict(head(pooled, rois), rois)["mask_probs"]
    assert probs.shape == (7, 8, 8) and probs.dtype == torch.float32
    torch.testing.assert_close(probs, expected, rtol=1e-5, atol=1e-6)
    # the plain head (nn.ConvTranspose2d, then the predictor on every class) gives the same
    with fast_paths(False):
        plain = head.predict(head(pooled, rois), rois)["mask_probs"]
    torch.testing.assert_close(probs, plain, rtol=1e-5, atol=1e-6)
    # one class's mask each: a different label gives a different mask
    other = RoIs(rois.boxes, rois.image_index, labels % 4 + 1)
    assert not torch.allclose(head.predict(head(pooled, other), other)["mask_probs"], probs, atol=1e-3)


def test_mask_head_off_the_fast_paths_agrees_with_gradients():
    torch.manual_seed(0)
    head = mask_head(in_channels=8, num_classes=5, conv_dim=6, num_convs=2)
    nn.init.normal_(head.predictor.weight, std=0.5)
    pooled = torch.randn(7, 8, 4, 4).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    labels = torch.tensor([1, 4, 2, 2, 3, 1, 4])
    rois = RoIs(torch.zeros(7, 4), torch.zeros(7, dtype=torch.int64), labels)
    grad = torch.randn(7, 8, 8)
    parameters = (
        pooled,
        head.predictor.weight,
        head.predictor.bias,
        head.deconv.weight,
        head.convs[0].weight,
    )
    with counting() as fast_runs:
        fast = head(pooled, rois)
    fast_grads = torch.autograd.grad(fast, parameters, grad)
    with fast_paths(False), counting() as plain_runs:
        plain = head(pooled, rois)
    plain_grads = torch.autograd.grad(plain, parameters, grad)
    assert fast.shape == plain.shape == (7, 8, 8)
    # on: the one-class predictor and the upsampling product ran; off: convolutions only
    assert fast_runs["mask_labelled_class_only"] == fast_runs["mask_upsample_product"] == 1
    assert not plain_runs
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    for got, want in zip(fast_grads, plain_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_fused_rpn_predictors_equal_the_two_convs_with_gradients():
    """On: objectness and deltas come from one 1x1 conv of the concatenated weights; off: the
    two nn.Conv2d predictors."""
    torch.manual_seed(0)
    head = RPNHead(8, 3)
    for layer in (head.objectness, head.deltas):
        nn.init.normal_(layer.weight, std=0.5)
        nn.init.normal_(layer.bias, std=0.5)
    features = [
        torch.randn(2, 8, h, w).contiguous(memory_format=torch.channels_last).requires_grad_(True)
        for h, w in ((12, 10), (6, 5), (3, 3))
    ]
    parameters = (*features, *head.parameters())

    def run():
        objectness, deltas = head(features)
        assert [o.shape for o in objectness] == [(2, 3, *f.shape[-2:]) for f in features]
        assert [d.shape for d in deltas] == [(2, 12, *f.shape[-2:]) for f in features]
        loss = sum((o.square() * 0.5).sum() + d.sin().sum() for o, d in zip(objectness, deltas))
        return objectness + deltas, torch.autograd.grad(loss, parameters)

    with counting() as fast_runs:
        fast, fast_grads = run()
    with fast_paths(False), counting() as plain_runs:
        plain, plain_grads = run()
    # on: one conv of the concatenated predictor weights; off: two separate convs
    assert fast_runs["rpn_fused_predictors"] == 1 and not plain_runs
    for got, want in zip(fast, plain):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for got, want in zip(fast_grads, plain_grads):
        assert got.abs().sum() > 0
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "shape, groups", [((2, 32, 20, 28), 32), ((3, 16, 9, 11), 16), ((2, 32, 12, 10), 8), ((1, 8, 5, 7), 2)]
)
def test_group_norm_channels_last_backward_equals_native(shape, groups):
    generator = torch.Generator().manual_seed(1)
    norm = GroupNorm(groups, shape[1])
    with torch.no_grad():
        norm.weight.copy_(torch.rand(shape[1], generator=generator) + 0.5)
        norm.bias.copy_(torch.randn(shape[1], generator=generator))
    x = (torch.randn(shape, generator=generator) * 3 + 1).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    grad = torch.randn(shape, generator=generator)
    with counting() as runs:
        out = norm(x)
    assert runs["group_norm_backward"] == 1  # the fast path ran
    got = torch.autograd.grad(out, (x, norm.weight, norm.bias), grad)
    reference = F.group_norm(x, groups, norm.weight, norm.bias, norm.eps)
    expected = torch.autograd.grad(reference, (x, norm.weight, norm.bias), grad)
    torch.testing.assert_close(out, reference)
    assert got[0].is_contiguous(memory_format=torch.channels_last)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_group_norm_keeps_the_native_kernel_where_it_is_faster():
    norm = GroupNorm(32, 64)
    wide = torch.randn(2, 64, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    nchw = torch.randn(2, 32, 6, 6, requires_grad=True)
    with counting() as runs:
        torch.testing.assert_close(norm(wide), F.group_norm(wide, 32, norm.weight, norm.bias, norm.eps))
        GroupNorm(32, 32)(nchw)
    assert not runs
    assert isinstance(norm, nn.GroupNorm) and set(norm.state_dict()) == {"weight", "bias"}


def test_group_norm_of_a_bfloat16_map_is_computed_in_float32():
    generator = torch.Generator().manual_seed(2)
    norm = GroupNorm(16, 32)
    x = torch.randn(2, 32, 10, 12, generator=generator).contiguous(memory_format=torch.channels_last)
    low = x.to(torch.bfloat16).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(low)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, F.group_norm(low.float(), 16, norm.weight, norm.bias, norm.eps))
    out.square().sum().backward()
    assert low.grad is not None and low.grad.dtype == torch.bfloat16 and low.grad.abs().sum() > 0


def test_group_norm_of_a_model_converted_to_bfloat16_stays_bfloat16():
    norm = GroupNorm(4, 8).to(torch.bfloat16)
    x = torch.randn(2, 8, 5, 5).to(torch.bfloat16)
    out = norm(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, F.group_norm(x, 4, norm.weight, norm.bias, norm.eps))
