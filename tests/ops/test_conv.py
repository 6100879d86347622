"""Convolution with the matrix-product weight gradient: the same values and gradients as F.conv2d."""

import pytest
import torch
import torch.nn.functional as F

from maskrcnn.fast_path_switch import counting
from maskrcnn.ops.conv import Conv2d, conv2d, weight_gradient
from maskrcnn.testing import channels_last


def ours_ran(run) -> bool:
    """Whether our weight gradient computed the gradient of what run() returns (it is
    back-propagated here when it needs a gradient)."""
    with counting() as runs:
        y = run()
        if y.requires_grad:
            y.sum().backward()
    return runs["conv_weight_gradient"] > 0


@pytest.mark.parametrize(
    "in_channels,out_channels,kernel,padding,stride,size",
    [
        (8, 16, 3, 1, 1, (20, 27)),
        (16, 8, 1, 0, 1, (17, 30)),
        (5, 6, 5, 2, 1, (19, 21)),
        (8, 8, 3, 0, 1, (24, 20)),
        (4, 12, 3, (1, 0), 1, (18, 25)),
        (8, 8, 3, 1, 2, (20, 27)),
        (8, 8, 3, 1, 2, (19, 21)),
        (6, 10, 1, 0, 2, (17, 22)),
        (4, 6, 7, 3, 2, (23, 30)),
        (4, 6, 3, 1, (2, 1), (18, 19)),
        (4, 6, 5, 1, 3, (26, 25)),
    ],
)
def test_values_and_gradients_equal_f_conv2d(
    any_size, in_channels, out_channels, kernel, padding, stride, size
):
    x = channels_last(3, in_channels, *size, seed=0)
    weight = torch.randn(
        out_channels, in_channels, kernel, kernel, generator=torch.Generator().manual_seed(1)
    )
    bias = torch.randn(out_channels, generator=torch.Generator().manual_seed(2))
    ours = [t.clone().requires_grad_() for t in (x, weight, bias)]
    theirs = [t.clone().requires_grad_() for t in (x, weight, bias)]
    with counting() as runs:
        y = conv2d(*ours, stride=stride, padding=padding)
        want = F.conv2d(*theirs, stride=stride, padding=padding)
        torch.testing.assert_close(y, want)
        grad = torch.randn(want.shape, generator=torch.Generator().manual_seed(3))
        y.backward(grad)
    # 1x1 kernels keep the native gradient; `weight_gradient` is checked on them below
    assert (runs["conv_weight_gradient"] == 1) == (kernel > 1)
    want.backward(grad)
    for got, expected in zip(ours, theirs):
        torch.testing.assert_close(got.grad, expected.grad, rtol=1e-4, atol=1e-4)
    pair = (padding, padding) if isinstance(padding, int) else padding
    strides = (stride, stride) if isinstance(stride, int) else stride
    direct = weight_gradient(grad, x, (kernel, kernel), pair, strides)
    torch.testing.assert_close(direct, theirs[1].grad, rtol=1e-4, atol=1e-4)


def test_weight_gradient_wraps_nothing_across_image_edges():
    # A gradient only in each image's last column and row: a shifted read that wrapped into
    # the next row or image would pick up the large values placed there.
    x = torch.zeros(2, 1, 5, 6)
    x[:, :, :, 0] = 100.0
    x[1, :, 0, :] = 100.0
    x[:, :, 2:4, 3:5] = 1.0
    grad = torch.zeros(2, 1, 5, 6)
    grad[:, :, -1, :] = 1.0
    grad[:, :, :, -1] = 1.0
    weight = torch.zeros(1, 1, 3, 3, requires_grad=True)
    F.conv2d(x, weight, padding=1).backward(grad)
    torch.testing.assert_close(weight_gradient(grad, x, (3, 3), (1, 1)), weight.grad)


def test_other_convolutions_are_f_conv2d():
    x = channels_last(2, 64, 48, 48, seed=4)  # 50 * 50 padded cells per image, 64 channels: the products
    weight = torch.randn(4, 64, 3, 3, requires_grad=True)
    assert ours_ran(lambda: conv2d(x, weight, padding=1))
    # maps where oneDNN's own gradient is as fast: few channels, small images (many RoIs)
    assert not ours_ran(lambda: conv2d(channels_last(2, 32, 48, 48, seed=6), weight[:, :32], padding=1))
    assert not ours_ran(lambda: conv2d(channels_last(32, 64, 14, 14, seed=7), weight, padding=1))
    for kwargs, source in (
        (dict(padding=1, groups=2), x),
        (dict(padding=1, dilation=2), x),
        (dict(padding=1), x.contiguous()),
    ):
        w = weight if kwargs.get("groups", 1) == 1 else weight[:, :32]
        assert not ours_ran(lambda: conv2d(source, w, None, **kwargs)), kwargs  # noqa: B023
        torch.testing.assert_close(conv2d(source, w, None, **kwargs), F.conv2d(source, w, None, **kwargs))
    small = channels_last(1, 64, 8, 8, seed=6)
    assert not ours_ran(lambda: conv2d(small, weight, padding=1))
    frozen = weight.detach()
    assert not ours_ran(lambda: conv2d(x, frozen, padding=1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv2d(x, weight, padding=1).dtype == torch.bfloat16


def test_module_keeps_nn_conv2d_state_and_parameter_layout(any_size):
    torch.manual_seed(0)
    ours = Conv2d(6, 6, 3, padding=1).to(memory_format=torch.channels_last)
    reference = torch.nn.Conv2d(6, 6, 3, padding=1)
    reference.load_state_dict(ours.state_dict())
    assert ours.state_dict().keys() == reference.state_dict().keys()
    x = channels_last(4, 6, 32, 32, seed=5)
    with counting() as runs:
        ours(x).square().sum().backward()
    assert runs["conv_weight_gradient"] == 1
    reference(x).square().sum().backward()
    assert ours.weight.grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.bias.grad, reference.bias.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("out_channels", [6, 1])
@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format], ids=["nhwc", "nchw"])
def test_the_weight_gradient_has_the_parameters_own_strides(any_size, out_channels, layout):
    """DDP copies each gradient into a bucket view with its parameter's strides, and warns
    when they differ, even only in a dimension of size 1 (one output channel); autograd
    copies one that differs elsewhere."""
    torch.manual_seed(0)
    ours = Conv2d(6, out_channels, 3, padding=1).to(memory_format=layout)
    x = channels_last(2, 6, 16, 16, seed=8)
    with counting() as runs:
        # as the backward returns it: AccumulateGrad would copy a gradient of another layout
        (grad,) = torch.autograd.grad(ours(x).square().sum(), ours.weight)
    assert runs["conv_weight_gradient"] == 1
    assert grad.stride() == ours.weight.stride()


@pytest.mark.parametrize("stride", [1, 2])
def test_zero_images(any_size, stride):
    """A mask head given no RoIs: an empty output and zero weight and bias gradients, as nn.Conv2d."""
    torch.manual_seed(0)
    ours = Conv2d(6, 4, 3, padding=1, stride=stride).to(memory_format=torch.channels_last)
    reference = torch.nn.Conv2d(6, 4, 3, padding=1, stride=stride)
    reference.load_state_dict(ours.state_dict())
    x = channels_last(0, 6, 14, 14, seed=7).requires_grad_()
    y = ours(x)
    assert y.shape == reference(x).shape == (0, 4, 14 // stride, 14 // stride)
    y.sum().backward()
    reference(x).sum().backward()
    for got, expected in ((ours.weight.grad, reference.weight.grad), (ours.bias.grad, reference.bias.grad)):
        assert torch.equal(got, torch.zeros_like(got))
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    grad = torch.zeros(0, 4, 14 // stride, 14 // stride)
    direct = weight_gradient(grad, x.detach(), (3, 3), (1, 1), (stride, stride))
    assert torch.equal(direct, torch.zeros(4, 6, 3, 3))
