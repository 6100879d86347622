"""The fast-paths switch: its environment variable, its context manager, and for every op it
gates, that off runs the plain PyTorch/torchvision op and that on and off agree."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import maskrcnn
import maskrcnn.ops
from maskrcnn.modeling.norm import FrozenBatchNorm2d, GroupNorm, conv_norm
from maskrcnn.modeling.weight_cache import inference_pass
from maskrcnn.ops import MultiScaleRoIPooler, fast_paths, fast_paths_enabled
from maskrcnn.ops import conv as conv_module
from maskrcnn.ops.conv import Conv2d, conv2d
from maskrcnn.ops.layout import dense_gradient
from maskrcnn.testing import channels_last, randomize_norm

# `maskrcnn.fast_path_switch` is the function (exported by the package), the module is this
switch = sys.modules["maskrcnn.fast_path_switch"]
roi_align_module = sys.modules["maskrcnn.ops.roi_align"]
roi_pool_module = sys.modules["maskrcnn.ops.roi_pool"]
roi_align, roi_align_rows = roi_align_module.roi_align, roi_align_module.roi_align_rows
roi_pool = roi_pool_module.roi_pool


def on_and_off(run, fast_path: str | None):
    """run() with the fast paths on, where `fast_path` (a name of FAST_PATHS; None: an op
    without one) must run, then off, where none may."""
    with fast_paths(True), switch.counting() as runs:
        fast = run()
    if fast_path is not None:
        assert runs[fast_path] > 0, f"{fast_path} did not run with the fast paths on"
    with fast_paths(False), switch.counting() as runs:
        plain = run()
    assert not runs, f"{dict(runs)} ran with the fast paths off"
    return fast, plain


def recording(monkeypatch, target, name: str) -> list:
    """Wrap target.name to record its calls; returns the list of calls' first arguments."""
    calls = []
    original = getattr(target, name)

    def wrapper(*args, **kwargs):
        calls.append(args[0] if args else None)
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapper)
    return calls


# The switch


@pytest.fixture
def reload_with(monkeypatch):
    """reload_with(value): the switch as a fresh import leaves it, with MASKRCNN_FAST_PATHS =
    value (None: unset): not read yet. (Not importlib.reload: that would replace the functions
    that `maskrcnn`, the gated modules and conftest hold.) Afterwards monkeypatch puts back the
    environment and the state, and conftest's autouse fixture the value."""

    def reload(value):
        if value is None:
            monkeypatch.delenv(switch.ENVIRONMENT_VARIABLE, raising=False)
        else:
            monkeypatch.setenv(switch.ENVIRONMENT_VARIABLE, value)
        monkeypatch.setattr(switch, "_enabled", None)
        return switch

    return reload


@pytest.mark.parametrize(
    ("value", "enabled"),
    [
        (None, True),
        ("", True),
        ("1", True),
        ("true", True),
        ("on", True),
        ("True", True),
        (" ON ", True),
        ("0", False),
        ("false", False),
        ("off", False),
        ("FALSE", False),
        ("Off\n", False),
    ],
)
def test_the_environment_variable_sets_the_initial_value(reload_with, value, enabled):
    module = reload_with(value)
    assert module.fast_paths_enabled() is enabled
    assert conv_module.fast_paths_enabled() is enabled  # what the gated modules read


@pytest.mark.parametrize("value", ["2", "yes", "no", "enabled", "-1", "o n"])
def test_a_malformed_environment_variable_raises_when_first_read(reload_with, value):
    module = reload_with(value)
    with pytest.raises(ValueError) as raised:
        module.fast_paths_enabled()
    message = str(raised.value)
    assert "MASKRCNN_FAST_PATHS" in message
    assert repr(value) in message
    for accepted in ("1", "true", "on", "0", "false", "off"):
        assert repr(accepted) in message
    # still unread: the next read raises again, and so does setting it (which reads the
    # value to restore)
    with pytest.raises(ValueError, match="MASKRCNN_FAST_PATHS"):
        module.fast_paths_enabled()
    with pytest.raises(ValueError, match="MASKRCNN_FAST_PATHS"):
        module.fast_paths(True)


def test_the_variable_is_read_once(reload_with, monkeypatch):
    module = reload_with("0")
    assert module.fast_paths_enabled() is False
    monkeypatch.setenv(module.ENVIRONMENT_VARIABLE, "1")
    assert module.fast_paths_enabled() is False


@pytest.mark.parametrize(
    ("value", "enabled"), [("off", False), ("1", True), (None, True), ("yes", "ValueError")]
)
def test_a_fresh_process_reads_the_variable_and_the_module_imports_no_torch(value, enabled):
    """The module loaded by its file alone (the `maskrcnn.ops` package imports torch for its
    other ops): torch-free, the variable decides, and a malformed one fails the first read,
    not the import."""
    path = Path(switch.__file__)
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('fast_paths', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "try:\n"
        "    enabled = module.fast_paths_enabled()\n"
        "except ValueError as error:\n"
        "    enabled = type(error).__name__\n"
        "print(json.dumps([enabled, 'torch' in sys.modules]))\n"
    )
    env = {key: val for key, val in os.environ.items() if key != "MASKRCNN_FAST_PATHS"}
    if value is not None:
        env["MASKRCNN_FAST_PATHS"] = value
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == [enabled, False]


def test_public_names():
    assert maskrcnn.fast_paths is switch.fast_paths is fast_paths
    assert maskrcnn.fast_paths_enabled is switch.fast_paths_enabled is fast_paths_enabled
    assert {"fast_paths", "fast_paths_enabled"} <= set(maskrcnn.ops.__all__)
    assert "fast_paths" in dir(maskrcnn)


def _every_fast_path_workload(any_size):
    """A training step and a prediction of two small models that between them reach every
    fast path: GroupNorm and RoIAlign averaging; a frozen BatchNorm and RoIAlign's maximum."""
    from maskrcnn.config import config_from_dict, config_to_dict, merge
    from maskrcnn.testing import tiny_model_config

    images = [torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(0)) for _ in range(2)]
    masks = torch.zeros(1, 64, 80)
    masks[0, 10:40, 20:60] = 1
    target = {"boxes": torch.tensor([[20.0, 10.0, 60.0, 40.0]]), "labels": torch.tensor([1]), "masks": masks}
    for changes in ({}, {"backbone": {"norm": "frozen_bn"}, "roi_heads": {"pooler": "align_max"}}):
        torch.manual_seed(0)
        config = config_from_dict(maskrcnn.ModelConfig, merge(config_to_dict(tiny_model_config()), changes))
        model = maskrcnn.build_model(config).train()
        sum(model.losses(images, [target, target]).values()).backward()
        model.eval().predict(images)


def test_every_fast_path_is_listed_counted_when_on_and_none_runs_when_off(any_size):
    with switch.counting() as runs:
        _every_fast_path_workload(any_size)
    assert set(runs) == set(switch.FAST_PATHS), set(switch.FAST_PATHS) ^ set(runs)
    with fast_paths(False), switch.counting() as runs:
        _every_fast_path_workload(any_size)
    assert not runs
    with pytest.raises(KeyError, match="not a fast path"):
        switch.ran("a_trick_nobody_listed")


def test_a_plain_call_sets_the_switch():
    assert fast_paths_enabled() is True  # conftest starts every test with them on
    fast_paths(False)
    assert fast_paths_enabled() is False
    fast_paths(False)
    assert fast_paths_enabled() is False
    fast_paths(True)
    assert fast_paths_enabled() is True


@pytest.mark.parametrize("start", [True, False])
def test_the_context_manager_restores_the_previous_value(start):
    fast_paths(start)
    with fast_paths(not start) as handle:
        assert fast_paths_enabled() is (not start)
        with fast_paths(start):
            assert fast_paths_enabled() is start
        assert fast_paths_enabled() is (not start)
        fast_paths(start)  # a plain call inside the block is undone with the block
    assert fast_paths_enabled() is start
    assert handle is not None
    with fast_paths(start):  # the same value: nothing changes
        assert fast_paths_enabled() is start
    assert fast_paths_enabled() is start


def test_the_context_manager_restores_on_an_exception():
    with pytest.raises(KeyError):
        with fast_paths(False):
            raise KeyError("inside")
    assert fast_paths_enabled() is True


@pytest.mark.parametrize("value", [0, 1, "0", "off", None])
def test_only_bools_are_accepted(value):
    with pytest.raises(TypeError, match="True or False"):
        fast_paths(value)
    assert fast_paths_enabled() is True


# ops/conv.py: conv2d


@pytest.mark.parametrize(("padding", "stride"), [(1, 1), (1, 2), (0, 1)])
def test_conv2d_off_is_f_conv2d_and_agrees_with_on(any_size, padding, stride):
    x = channels_last(2, 6, 15, 17, seed=0)
    weight = torch.randn(8, 6, 3, 3, generator=torch.Generator().manual_seed(1))
    bias = torch.randn(8, generator=torch.Generator().manual_seed(2))
    grad = None

    def run():
        nonlocal grad
        inputs = [t.clone().requires_grad_() for t in (x, weight, bias)]
        y = conv2d(*inputs, stride=stride, padding=padding)
        if grad is None:
            grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(3))
        y.backward(grad)
        return y, [t.grad for t in inputs]

    (fast, fast_grads), (plain, plain_grads) = on_and_off(run, "conv_weight_gradient")
    torch.testing.assert_close(plain, fast)
    for got, expected in zip(plain_grads, fast_grads):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # and it is exactly F.conv2d
    with fast_paths(False):
        again, again_grads = run()
    reference = [t.clone().requires_grad_() for t in (x, weight, bias)]
    expected = F.conv2d(*reference, stride=stride, padding=padding)
    expected.backward(grad)
    assert torch.equal(again, expected)
    for got, want in zip(again_grads, reference):
        assert torch.equal(got, want.grad)


def test_conv2d_module_off_is_nn_conv2d(any_size):
    torch.manual_seed(0)
    ours = Conv2d(6, 6, 3, padding=1).to(memory_format=torch.channels_last)
    x = channels_last(2, 6, 12, 12, seed=5)

    def run():
        ours.zero_grad()
        y = ours(x)
        y.square().sum().backward()
        return y, ours.weight.grad.clone(), ours.bias.grad.clone()

    fast, plain = on_and_off(run, "conv_weight_gradient")
    torch.testing.assert_close(plain[0], fast[0])
    for got, expected in zip(plain[1:], fast[1:]):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


# modeling/norm.py: conv_norm and GroupNorm


@pytest.mark.parametrize("bias", [False, True])
def test_conv_norm_off_is_norm_of_conv_and_agrees_with_on(bias):
    torch.manual_seed(0)
    conv = Conv2d(6, 8, 3, stride=2, padding=1, bias=bias)
    norm = randomize_norm(FrozenBatchNorm2d(8))
    x = torch.randn(2, 6, 11, 9)

    def run():
        conv.zero_grad()
        source = x.clone().requires_grad_()
        y = conv_norm(conv, norm, source)
        y.square().sum().backward()
        return y, source.grad, conv.weight.grad.clone()

    fast, plain = on_and_off(run, "frozen_norm_fold")
    torch.testing.assert_close(plain[0], fast[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain[1], fast[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(plain[2], fast[2], rtol=1e-4, atol=1e-4)
    # off: the two layers, bit for bit
    with fast_paths(False):
        assert torch.equal(conv_norm(conv, norm, x), norm(conv(x)))


def test_conv_norm_off_caches_no_folded_weights():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
    norm = randomize_norm(FrozenBatchNorm2d(4))
    x = torch.randn(1, 4, 6, 6)
    for enabled in (True, False):
        with fast_paths(enabled), torch.no_grad(), inference_pass():
            first = conv_norm(conv, norm, x)
            conv.weight.mul_(2)  # a cached fold would not see this (a pass promises no change)
            second = conv_norm(conv, norm, x)
        if enabled:  # on: the fold is kept within the pass
            assert torch.equal(first, second)
        else:  # off: the layers as they are, nothing kept
            assert torch.equal(second, norm(conv(x))) and not torch.allclose(first, second)


@pytest.mark.parametrize(("shape", "groups"), [((2, 32, 20, 28), 32), ((3, 16, 9, 11), 8)])
def test_group_norm_off_is_f_group_norm_and_agrees_with_on(monkeypatch, shape, groups):
    generator = torch.Generator().manual_seed(1)
    norm = GroupNorm(groups, shape[1])
    with torch.no_grad():
        norm.weight.copy_(torch.rand(shape[1], generator=generator) + 0.5)
        norm.bias.copy_(torch.randn(shape[1], generator=generator))
    x = (torch.randn(shape, generator=generator) * 3 + 1).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(shape, generator=generator)

    def run():
        source = x.clone().requires_grad_()
        out = norm(source)
        grads = torch.autograd.grad(out, (source, norm.weight, norm.bias), grad)
        return out, grads

    fast, plain = on_and_off(run, "group_norm_backward")
    torch.testing.assert_close(plain[0], fast[0])
    for got, expected in zip(plain[1], fast[1]):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    calls = recording(monkeypatch, F, "group_norm")
    with fast_paths(False):
        out = norm(x.clone().requires_grad_())
    assert len(calls) == 1
    assert torch.equal(out, F.group_norm(x, groups, norm.weight, norm.bias, norm.eps))


# ops/roi_align.py: roi_align and roi_align_rows


def random_rois(generator, num_images: int, count: int, image_size, margin: float = 4.0) -> torch.Tensor:
    height, width = image_size
    x1 = torch.rand(count, generator=generator) * (width + 2 * margin) - margin
    y1 = torch.rand(count, generator=generator) * (height + 2 * margin) - margin
    sides = 1.0 + torch.rand(count, 2, generator=generator) * 0.6 * max(height, width)
    index = torch.randint(num_images, (count,), generator=generator).float()
    return torch.stack((index, x1, y1, x1 + sides[:, 0], y1 + sides[:, 1]), dim=1)


def pool_with_grad(op, features, rois, output_size, upstream_seed=7, **kwargs):
    source = features.detach().clone().requires_grad_()
    out = op(source, rois, output_size, **kwargs)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(upstream_seed))
    (out * upstream.to(out.dtype)).sum().backward()
    return out, source.grad


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [2, 0])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_roi_align_off_is_torchvision_and_agrees_with_on(monkeypatch, aligned, sampling_ratio, layout):
    generator = torch.Generator().manual_seed(20 + sampling_ratio + aligned)
    features = torch.randn(2, 5, 19, 23, generator=generator).contiguous(memory_format=layout)
    rois = random_rois(generator, 2, 12, (76, 92))
    kwargs = dict(spatial_scale=0.25, sampling_ratio=sampling_ratio, aligned=aligned)
    (fast, fast_grad), (plain, plain_grad) = on_and_off(
        lambda: pool_with_grad(roi_align, features, rois, (7, 5), **kwargs), "roi_align"
    )
    assert fast.abs().sum() > 0
    torch.testing.assert_close(plain, fast, rtol=0, atol=1e-5)
    torch.testing.assert_close(plain_grad, fast_grad, rtol=1e-4, atol=1e-4)
    # the same layout contract: (K, C, PH, PW) channels-last in memory
    assert plain.shape == fast.shape == (12, 5, 7, 5)
    assert plain.is_contiguous(memory_format=torch.channels_last)
    # off, torchvision's kernel is what runs
    calls = recording(monkeypatch, torchvision.ops, "roi_align")
    with fast_paths(False):
        again, again_grad = pool_with_grad(roi_align, features, rois, (7, 5), **kwargs)
    assert len(calls) == 1
    reference, reference_grad = pool_with_grad(torchvision.ops.roi_align, features, rois, (7, 5), **kwargs)
    assert torch.equal(again, reference)
    assert torch.equal(again_grad, reference_grad)


def test_roi_align_rows_off_keeps_its_layout(monkeypatch):
    generator = torch.Generator().manual_seed(21)
    features = torch.randn(2, 6, 14, 18, generator=generator)
    boxes = [random_rois(generator, 1, n, (56, 72))[:, 1:] for n in (4, 3)]
    kwargs = dict(spatial_scale=0.25, sampling_ratio=2, aligned=True)
    (fast, fast_grad), (plain, plain_grad) = on_and_off(
        lambda: pool_with_grad(roi_align_rows, features, boxes, (4, 6), **kwargs), "roi_align"
    )
    assert plain.shape == fast.shape == (7, 4, 6, 6)  # (K, PH, PW, C)
    assert plain.is_contiguous()
    torch.testing.assert_close(plain, fast, rtol=0, atol=1e-5)
    torch.testing.assert_close(plain_grad, fast_grad, rtol=1e-4, atol=1e-4)
    calls = recording(monkeypatch, torchvision.ops, "roi_align")
    with fast_paths(False):
        rows = roi_align_rows(features, boxes, (4, 6), **kwargs)
    assert len(calls) == 1
    expected = torchvision.ops.roi_align(features, boxes, (4, 6), **kwargs).permute(0, 2, 3, 1)
    assert torch.equal(rows, expected)


@pytest.mark.parametrize("kind", ["align", "pool"])
def test_the_pooler_gives_the_same_rows_either_way(kind):
    """A caller of roi_align_rows / roi_pool, unchanged: the same values with the switch on and off."""
    generator = torch.Generator().manual_seed(22)
    features = [torch.randn(2, 4, 64 // s, 80 // s, generator=generator) for s in (4, 8, 16, 32)]
    boxes = [random_rois(generator, 1, n, (64, 80), margin=0.0)[:, 1:] * 2 for n in (5, 6)]
    pooler = MultiScaleRoIPooler(7, (4, 8, 16, 32), sampling_ratio=2, kind=kind)

    def run():
        sources = [f.clone().requires_grad_() for f in features]
        out = pooler(sources, boxes)
        out.square().sum().backward()
        return out, [s.grad for s in sources]

    fast, plain = on_and_off(run, "roi_align" if kind == "align" else None)
    assert plain[0].shape == fast[0].shape == (11, 4, 7, 7)
    torch.testing.assert_close(plain[0], fast[0], rtol=0, atol=1e-5)
    for got, expected in zip(plain[1], fast[1]):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
def test_off_keeps_the_edge_cases_torchvision_does_not_handle(op):
    function = {"roi_align": roi_align, "roi_pool": roi_pool}[op]
    with fast_paths(False):
        # an empty map: zeros and a zero gradient (torchvision's CPU kernel crashes on it)
        features = torch.randn(1, 3, 0, 8, requires_grad=True)
        out = function(features, torch.tensor([[0, 1.0, 1.0, 4.0, 4.0]]), (3, 2))
        assert torch.equal(out, torch.zeros(1, 3, 3, 2))
        out.sum().backward()
        assert torch.equal(features.grad, torch.zeros(1, 3, 0, 8))
        # no RoIs, as an empty list (torchvision's list form needs a tensor)
        features = torch.randn(2, 6, 10, 12, requires_grad=True)
        out = function(features, [], (7, 5))
        assert out.shape == (0, 6, 7, 5)
        out.sum().backward()
        assert torch.equal(features.grad, torch.zeros_like(features))
        # a bad box shape is our ValueError
        with pytest.raises(ValueError):
            function(features, torch.zeros(3, 4), 2)


@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
def test_off_pools_bfloat16_in_float32(op):
    """torchvision's CPU kernels have no bfloat16: off pools bfloat16 maps in float32, as ours."""
    function = {"roi_align": roi_align, "roi_pool": roi_pool}[op]
    generator = torch.Generator().manual_seed(23)
    features = torch.randn(2, 4, 12, 14, generator=generator).to(torch.bfloat16)
    rois = random_rois(generator, 2, 6, (48, 56))
    fast, plain = on_and_off(
        lambda: function(features, rois, 3, 0.25, 2), "roi_align" if op == "roi_align" else None
    )
    assert plain.dtype == fast.dtype == torch.bfloat16
    expected = {"roi_align": torchvision.ops.roi_align, "roi_pool": torchvision.ops.roi_pool}[op](
        features.float(), rois, 3, 0.25, *((2,) if op == "roi_align" else ())
    )
    assert torch.equal(plain, expected.to(torch.bfloat16))
    torch.testing.assert_close(plain.float(), fast.float(), rtol=0, atol=1e-2)


# ops/layout.py: dense_gradient


def rpn_like_loss(output: torch.Tensor) -> torch.Tensor:
    """As in test_layout.py: a read through slices and reshapes, which gives a strided gradient."""
    flat = output.permute(0, 2, 3, 1).reshape(output.shape[0], -1)
    joined = torch.cat((flat, torch.zeros(output.shape[0], 7)), dim=1)
    return joined.flatten()[torch.tensor([0, 5, 9, 40, 77])].square().sum()


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format], ids=["nhwc", "nchw"])
def test_dense_gradient_off_is_the_identity(layout):
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=layout)

    def run():
        source = x.clone().requires_grad_()
        y = source * 2
        seen = []
        y.register_hook(seen.append)
        out = dense_gradient(y)
        rpn_like_loss(out).backward()
        return out is y, seen[0].is_contiguous(memory_format=layout), source.grad

    (fast_same, fast_dense, fast_grad), (plain_same, plain_dense, plain_grad) = on_and_off(
        run, "dense_gradient"
    )
    assert (fast_same, fast_dense) == (False, True)
    assert (plain_same, plain_dense) == (True, False)  # autograd's own strided gradient
    torch.testing.assert_close(plain_grad, fast_grad, rtol=0, atol=0)
    with fast_paths(False):
        y = x.clone().requires_grad_() * 2
        assert dense_gradient(y) is y
