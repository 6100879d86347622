"""The Table 2c pooler kinds align_max, warp and warp_max against a slow loop reference, torchvision's
roi_align and ONNX Runtime; the reference itself is checked on plain RoIAlign against torchvision."""

import io
import math
import warnings

import numpy as np
import pytest
import torch
import torchvision

from maskrcnn import choices
from maskrcnn.fast_path_switch import fast_paths
from maskrcnn.ops import MultiScaleRoIPooler, assign_fpn_levels
from maskrcnn.ops.poolers import POOLERS

KINDS = ("align_max", "warp", "warp_max")

# In image pixels, for maps of 9 x 11 cells at spatial_scale 0.5 (an 18 x 22 image) or 0.25.
AWKWARD_ROIS = torch.tensor(
    [
        [0, 3.3, 2.7, 12.9, 10.1],  # fractional corners
        [1, 5.0, -3.0, 17.0, 13.0],  # x 0.5: 2.5, -1.5, 8.5, 6.5: rounding half away from zero matters
        [1, -5.2, -3.1, 6.6, 7.3],  # over the top-left corner
        [0, 15.5, 12.2, 30.4, 25.0],  # over the bottom-right corner
        [1, -30.0, -20.0, -8.0, -6.0],  # wholly outside, above and left
        [0, 50.0, 2.0, 70.0, 9.0],  # wholly outside, right
        [0, 12.0, 5.0, 4.0, 9.0],  # inverted: x2 < x1
        [1, 7.0, 3.0, 7.0, 12.0],  # zero width
        [0, 9.1, 11.2, 9.3, 11.35],  # smaller than a cell
        [1, -30.0, -24.0, 46.0, 40.0],  # huge: ~4x the map
        [0, 0.0, 0.0, 22.0, 18.0],  # the whole image
    ],
    dtype=torch.float64,
)


def test_every_configurable_pooler_has_an_implementation():
    assert sorted(POOLERS) == sorted(choices.POOLERS)
    for kind in choices.POOLERS:
        assert MultiScaleRoIPooler(7, (4, 8), kind=kind).kind == kind


# The slow reference: loops over RoIs, bins and samples, the Caffe2/torchvision RoIAlign kernel written out.


def round_half_away(value: float) -> float:
    """C's round(), RoIPool's rounding (Python's round() rounds half to even)."""
    return math.copysign(math.floor(abs(value) + 0.5), value)


def bilinear_taps(height: int, width: int, y: float, x: float) -> list[tuple[int, int, float]]:
    """The (row, column, weight) cells RoIAlign's bilinear interpolation reads at (y, x); none when the point
    is more than one cell outside the map (its value is 0)."""
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return []
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:  # the last cell (or beyond): that cell alone
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return [
        (y_low, x_low, hy * hx),
        (y_low, x_high, hy * lx),
        (y_high, x_low, ly * hx),
        (y_high, x_high, ly * lx),
    ]


def reference_pool(features, rois, output_size, spatial_scale, sampling_ratio, aligned, kind, upstream):
    """features (N, C, H, W), rois (K, 5), upstream (K, PH, PW, C) -> the pooled (K, PH, PW, C) and the
    gradient of sum(pooled * upstream) with respect to the features, both float64 numpy arrays.

    kind "align" or "warp" averages a bin's samples, "align_max" or "warp_max" takes their maximum (a sample
    outside the map is 0 there, the gradient goes to the winner's taps); "warp" kinds first round the corners
    x * spatial_scale half away from zero and then sample [x1q, x2q] as RoIAlign with aligned=False does.
    """
    f = features.detach().double().numpy()
    g = upstream.detach().double().numpy()
    _, channels, height, width = f.shape
    out_h, out_w = output_size
    pooled = np.zeros((len(rois), out_h, out_w, channels))
    grad = np.zeros_like(f)
    for k, (image, *corners) in enumerate(rois.tolist()):
        image = int(image)
        if kind.startswith("warp"):
            x1, y1, x2, y2 = (round_half_away(c * spatial_scale) for c in corners)
            shifted = False
        else:
            offset = 0.5 if aligned else 0.0
            x1, y1, x2, y2 = (c * spatial_scale - offset for c in corners)
            shifted = aligned
        roi_w, roi_h = x2 - x1, y2 - y1
        if not shifted:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / out_h)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / out_w)
        bin_h, bin_w = roi_h / out_h, roi_w / out_w
        for ph in range(out_h):
            for pw in range(out_w):
                samples = []  # (value (C,), taps) of each sample of the bin
                for iy in range(grid_h):
                    y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                        taps = bilinear_taps(height, width, y, x)
                        value = np.zeros(channels)
                        for row, col, weight in taps:
                            value += weight * f[image, :, row, col]
                        samples.append((value, taps))
                if not samples:  # a grid of 0 samples: the bin is 0
                    continue
                if kind.endswith("max"):
                    values = np.stack([value for value, _ in samples])
                    winner = values.argmax(axis=0)
                    pooled[k, ph, pw] = values.max(axis=0)
                    for channel in range(channels):
                        for row, col, weight in samples[winner[channel]][1]:
                            grad[image, channel, row, col] += g[k, ph, pw, channel] * weight
                else:
                    pooled[k, ph, pw] = sum(value for value, _ in samples) / len(samples)
                    for _, taps in samples:
                        for row, col, weight in taps:
                            grad[image, :, row, col] += g[k, ph, pw] * weight / len(samples)
    return pooled, grad


def pool_with_grad(kind, features, rois, output_size, *args):
    """POOLERS[kind] on a copy of features -> pooled (K, PH, PW, C), a random upstream (K, PH, PW, C) and
    the gradient of sum(pooled * upstream) with respect to the features."""
    leaf = features.detach().clone().requires_grad_(True)
    pooled = POOLERS[kind](leaf, rois, output_size, *args)
    upstream = torch.randn(pooled.shape, generator=torch.Generator().manual_seed(7), dtype=pooled.dtype)
    (pooled * upstream).sum().backward()
    return pooled, upstream, leaf.grad


def awkward_features(dtype=torch.float64) -> torch.Tensor:
    return torch.randn(2, 3, 9, 11, generator=torch.Generator().manual_seed(1), dtype=dtype)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 1, 2])
@pytest.mark.parametrize("spatial_scale", [0.5, 0.25])
@pytest.mark.parametrize("kind", KINDS)
def test_matches_the_loop_reference_on_awkward_rois(kind, spatial_scale, sampling_ratio, aligned):
    features = awkward_features()
    rois = AWKWARD_ROIS
    args = (spatial_scale, sampling_ratio, aligned)
    pooled, upstream, grad = pool_with_grad(kind, features, rois, (3, 2), *args)
    expected, expected_grad = reference_pool(features, rois, (3, 2), *args, kind, upstream)
    assert pooled.shape == (len(rois), 3, 2, 3)
    assert pooled.dtype == torch.float64 and pooled.is_contiguous()
    torch.testing.assert_close(pooled, torch.from_numpy(expected), rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, torch.from_numpy(expected_grad), rtol=0, atol=1e-12)
    assert grad.abs().sum() > 0
    outside = (4, 5)  # every sample more than a cell off the map: zeros, whatever the reduction
    assert torch.equal(pooled[list(outside)], torch.zeros(2, 3, 2, 3, dtype=torch.float64))
    inside = [k for k in range(len(rois)) if k not in outside]
    assert (pooled[inside] != 0).float().mean() > 0.6, "the comparison should cover non-trivial outputs"


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 1, 2])
def test_the_reference_averaging_is_roi_align(sampling_ratio, aligned):
    """The reference's sampling, validated: averaged, it is POOLERS["align"] and torchvision's roi_align."""
    features = awkward_features()
    args = (0.5, sampling_ratio, aligned)
    pooled, upstream, grad = pool_with_grad("align", features, AWKWARD_ROIS, (3, 2), *args)
    expected, expected_grad = reference_pool(features, AWKWARD_ROIS, (3, 2), *args, "align", upstream)
    torch.testing.assert_close(pooled, torch.from_numpy(expected), rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, torch.from_numpy(expected_grad), rtol=0, atol=1e-12)
    # torchvision's CPU kernel rejects the inverted RoI with an adaptive grid and aligned=True (see
    # test_roi_align.py); the others it pools.
    keep = [k for k in range(len(AWKWARD_ROIS)) if not (aligned and sampling_ratio <= 0 and k == 6)]
    reference = torchvision.ops.roi_align(features, AWKWARD_ROIS[keep], (3, 2), *args)
    torch.testing.assert_close(
        torch.from_numpy(expected[keep]), reference.permute(0, 2, 3, 1), rtol=0, atol=1e-12
    )


def test_max_takes_the_largest_sample_where_the_mean_would_not():
    """A map increasing in x and y: each bin's largest sample is its bottom-right one, at a position known
    by hand, and it is larger than the bin's mean (the max kinds are not the averages under another name)."""
    ys = torch.arange(12, dtype=torch.float64)[:, None]
    xs = torch.arange(14, dtype=torch.float64)[None, :]
    features = (3.0 * ys + xs)[None, None]
    rois = torch.tensor([[0, 2.0, 1.0, 10.0, 9.0]], dtype=torch.float64)  # 8 x 8 cells, bins of 4 x 4
    out = POOLERS["align_max"](features, rois, 2, 1.0, 2, False)[0, ..., 0]
    # 2 samples per bin, at 1 and 3 cells into it: the last ones at y = 4, 8 and x = 5, 9
    last_y = torch.tensor([4.0, 8.0], dtype=torch.float64)
    last_x = torch.tensor([5.0, 9.0], dtype=torch.float64)
    expected = 3.0 * last_y[:, None] + last_x[None, :]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    mean = POOLERS["align"](features, rois, 2, 1.0, 2, False)[0, ..., 0]
    torch.testing.assert_close(
        out - mean, torch.full((2, 2), 3.0 + 1.0, dtype=torch.float64), rtol=0, atol=1e-12
    )


# warp: the relation to roi_align


def quantized(rois: torch.Tensor, spatial_scale: float) -> torch.Tensor:
    """Corners in feature cells rounded half away from zero: RoIPool's rounding, written independently."""
    corners = rois[:, 1:] * spatial_scale
    return torch.cat((rois[:, :1], torch.sign(corners) * torch.floor(corners.abs() + 0.5)), dim=1)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
@pytest.mark.parametrize("sampling_ratio", [0, 1, 2])
@pytest.mark.parametrize("spatial_scale", [1.0, 0.5, 1 / 16])
def test_warp_is_roi_align_with_aligned_false_on_the_rounded_rois(spatial_scale, sampling_ratio, fast):
    """warp(boxes) = torchvision.ops.roi_align(features, rounded corners, spatial_scale=1, aligned=False): the
    rounded RoI covers [x1q, x2q] (at least one cell), whatever `aligned` says."""
    generator = torch.Generator().manual_seed(int(16 * spatial_scale) + sampling_ratio)
    features = torch.randn(2, 4, 13, 17, generator=generator)
    corners = torch.rand(20, 2, generator=generator) * torch.tensor([17.0, 13.0]) - 2.0
    sizes = torch.rand(20, 2, generator=generator) * 9.0
    images = torch.randint(0, 2, (20, 1), generator=generator).float()
    rois = torch.cat((images, corners, corners + sizes), dim=1) / torch.tensor([1.0, *[spatial_scale] * 4])
    expected = torchvision.ops.roi_align(
        features, quantized(rois, spatial_scale), (3, 4), 1.0, sampling_ratio
    )
    with fast_paths(fast):
        for aligned in (False, True):
            warped = POOLERS["warp"](features, rois, (3, 4), spatial_scale, sampling_ratio, aligned)
            torch.testing.assert_close(warped, expected.permute(0, 2, 3, 1), rtol=0, atol=1e-5)
    unrounded = torchvision.ops.roi_align(features, rois, (3, 4), spatial_scale, sampling_ratio)
    assert not torch.allclose(unrounded, expected, atol=1e-3), "the rounding should change these RoIs"


@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize(("warp", "align"), [("warp", "align"), ("warp_max", "align_max")])
def test_warp_equals_align_when_the_corners_are_whole_cells(warp, align, sampling_ratio):
    """Rounding is a no-op on corners on whole cells, and then warp is RoIAlign (aligned=False): RoIWarp
    differs from RoIAlign by the rounding alone."""
    features = awkward_features(torch.float32)
    whole = torch.tensor([[0, 4.0, 2.0, 16.0, 14.0], [1, -6.0, 0.0, 10.0, 6.0], [0, 8.0, 8.0, 8.0, 30.0]])
    args = (whole, (3, 2), 0.5, sampling_ratio, False)
    torch.testing.assert_close(
        POOLERS[warp](features, *args), POOLERS[align](features, *args), rtol=0, atol=1e-6
    )
    # Corners half a cell off (x 0.5: 2.5, 1.5, ... and -3.5): rounded away from zero to those of `away`,
    # not to the even neighbours torch.round gives.
    halves = torch.tensor([[0, 5.0, 3.0, 17.0, 15.0], [1, -7.0, 1.0, 11.0, 7.0]])
    away = torch.tensor([[0, 6.0, 4.0, 18.0, 16.0], [1, -8.0, 2.0, 12.0, 8.0]])
    even = torch.cat((halves[:, :1], torch.round(halves[:, 1:] * 0.5) / 0.5), dim=1)
    warped = POOLERS[warp](features, halves, (3, 2), 0.5, sampling_ratio, False)
    torch.testing.assert_close(warped, POOLERS[align](features, away, (3, 2), 0.5, sampling_ratio, False))
    assert not torch.allclose(warped, POOLERS[align](features, even, (3, 2), 0.5, sampling_ratio, False))
    assert not torch.allclose(warped, POOLERS[align](features, halves, (3, 2), 0.5, sampling_ratio, False))


# Gradients


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck(kind):
    """A random map, samples at distinct positions inside it: no ties for the max."""
    generator = torch.Generator().manual_seed(14)
    features = torch.randn(1, 2, 5, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 1.3, 2.2, 9.1, 7.6], [0, 0.4, 0.8, 11.2, 9.4]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: POOLERS[kind](x, rois, (2, 3), 0.5, 2, True), (features,))


@pytest.mark.parametrize(
    ("kind", "roi", "grid", "winner"),
    [
        # samples at 3.25, 4.5 and 5.75 along both axes
        ("align_max", [0, 2.625, 2.625, 6.375, 6.375], 3, (4.5, 4.5)),
        # rounded to [3, 6] x [3, 6]: samples at 3.75 and 5.25
        ("warp_max", [0, 2.6, 3.4, 6.4, 5.6], 2, (3.75, 5.25)),
    ],
)
def test_the_max_gradient_reaches_only_the_taps_of_the_winning_sample(kind, roi, grid, winner):
    """One bin, one channel, one cell above the rest (0): the winner is the sample that weighs it most (no
    other sample ties it), the bin its value, and the gradient that sample's 4 bilinear weights alone."""
    features = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    features[0, 0, 4, 5] = 10.0
    rois = torch.tensor([roi], dtype=torch.float64)
    pooled, upstream, grad = pool_with_grad(kind, features, rois, 1, 1.0, grid, False)
    taps = bilinear_taps(8, 8, *winner)
    expected = torch.zeros_like(features)
    for row, col, weight in taps:
        expected[0, 0, row, col] += upstream.item() * weight
    assert pooled.item() == pytest.approx(10.0 * dict(((r, c), w) for r, c, w in taps)[(4, 5)])
    assert torch.count_nonzero(grad) == 4
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)


# Empty cases and dtypes


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
@pytest.mark.parametrize("kind", KINDS)
def test_no_rois_and_empty_maps_give_zeros_and_a_zero_gradient(kind, fast):
    with fast_paths(fast):
        for shape, rois in [
            ((2, 3, 9, 11), torch.zeros((0, 5))),
            ((2, 3, 9, 11), []),
            ((1, 3, 0, 8), AWKWARD_ROIS[:3].float() * 0),
            ((1, 3, 8, 0), AWKWARD_ROIS[:3].float() * 0),
            ((1, 0, 8, 8), AWKWARD_ROIS[:3].float() * 0),
        ]:
            features = torch.randn(shape, requires_grad=True)
            out = POOLERS[kind](features, rois, (3, 2), 0.5, 2, False)
            count = 0 if isinstance(rois, list) else len(rois)
            assert out.shape == (count, 3, 2, shape[1])
            assert torch.equal(out, torch.zeros(out.shape))
            assert out.requires_grad
            (out * 2.0).sum().backward()
            assert torch.equal(features.grad, torch.zeros(shape))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", KINDS)
def test_narrow_maps_are_pooled_in_float32_and_cast_back(kind, dtype):
    features = awkward_features(torch.float32).to(dtype).requires_grad_(True)
    rois = AWKWARD_ROIS.float()
    out = POOLERS[kind](features, rois, (3, 2), 0.5, 2, False)
    assert out.dtype == dtype
    wide = POOLERS[kind](features.detach().float(), rois, (3, 2), 0.5, 2, False)
    assert torch.equal(out, wide.to(dtype))
    out.float().sum().backward()
    assert features.grad.dtype == dtype and features.grad.abs().sum() > 0


# Through MultiScaleRoIPooler


def two_levels(generator: torch.Generator, channels: int = 3, dtype=torch.float32) -> list[torch.Tensor]:
    """P2 and P3 maps of two 128 x 160 images."""
    return [torch.randn(2, channels, 128 // s, 160 // s, generator=generator, dtype=dtype) for s in (4, 8)]


def rois_on_two_levels(generator: torch.Generator, count: int, dtype=torch.float32) -> torch.Tensor:
    """(count, 5) RoIs, sqrt(area) from ~10 to ~300 pixels (levels 2 and 3: below and above 112), images
    interleaved."""
    side = torch.exp(torch.empty(count, 1).uniform_(2.4, 5.6, generator=generator))
    aspect = torch.exp(torch.empty(count, 1).uniform_(-0.3, 0.3, generator=generator))
    sides = torch.cat((side * aspect, side / aspect), dim=1)
    corners = torch.rand(count, 2, generator=generator) * torch.tensor([160.0, 128.0]) - 20.0
    images = torch.randint(0, 2, (count, 1), generator=generator).float()
    return torch.cat((images, corners, corners + sides), dim=1).to(dtype)


@pytest.mark.parametrize("kind", KINDS)
def test_multi_scale_pooler_keeps_the_order_and_pools_each_roi_at_its_level(kind):
    generator = torch.Generator().manual_seed(3)
    features = [f.requires_grad_(True) for f in two_levels(generator)]
    rois = rois_on_two_levels(generator, 24)
    levels = assign_fpn_levels(rois[:, 1:], 2, 3)
    assert 5 <= (levels == 2).sum() <= 19, "both levels should have RoIs"
    pooler = MultiScaleRoIPooler(5, (4, 8), sampling_ratio=2, kind=kind)
    pooled = pooler(features, rois)
    assert pooled.shape == (24, 3, 5, 5)
    for index, (roi, level) in enumerate(zip(rois, levels.tolist())):
        alone = POOLERS[kind](features[level - 2], roi[None], 5, 1 / 2**level, 2, False)
        torch.testing.assert_close(pooled[index], alone[0].permute(2, 0, 1), rtol=0, atol=0)

    upstream = torch.randn(pooled.shape, generator=generator)
    (pooled * upstream).sum().backward()
    grads = [f.grad.clone() for f in features]
    with torch.no_grad():  # the no-grad path puts the rows in place another way
        torch.testing.assert_close(pooler(features, rois), pooled, rtol=0, atol=0)
    with fast_paths(False):
        for f in features:
            f.grad = None
        plain = pooler(features, rois)
        (plain * upstream).sum().backward()
    torch.testing.assert_close(plain, pooled, rtol=0, atol=1e-5)
    for grad, f in zip(grads, features):
        assert grad.abs().sum() > 0
        torch.testing.assert_close(f.grad, grad, rtol=0, atol=1e-5)


# Tracing and ONNX


class TwoLevelPooling(torch.nn.Module):
    def __init__(self, kind: str, sampling_ratio: int = 2):
        super().__init__()
        self.pooler = MultiScaleRoIPooler(4, (4, 8), sampling_ratio=sampling_ratio, kind=kind)

    def forward(self, p2: torch.Tensor, p3: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return self.pooler([p2, p3], rois)


def test_onnx_export_serves_other_roi_counts_and_map_sizes():
    """Exported as the model is (traced, torch.onnx's TorchScript exporter), each kind's graph pools other
    RoI counts (none at all, none on a level) and map sizes as the eager op does."""
    import onnxruntime  # a dev dependency: missing is a failure, not a skip

    from maskrcnn.export.onnx import OPSET

    generator = torch.Generator().manual_seed(5)
    traced_with = (*two_levels(generator), rois_on_two_levels(generator, 6))
    # with RoIs under a cell and of zero height: the rounding and the one-cell minimum in the graph too
    degenerate = torch.tensor([[0, 9.0, 9.0, 10.0, 11.0], [1, 41.0, 3.0, 43.0, 3.0]])
    many = torch.cat((rois_on_two_levels(generator, 17), degenerate))
    assert set(assign_fpn_levels(many[:, 1:], 2, 3).tolist()) == {2, 3}
    small = rois_on_two_levels(generator, 40)
    small = small[assign_fpn_levels(small[:, 1:], 2, 3) == 2][:5]  # level 3 without RoIs
    small[:, 0] = 0
    other_size = [torch.randn(1, 3, 24 // s, 20 // s, generator=generator) for s in (1, 2)]
    runs = [(*two_levels(generator), many), (*other_size, small), (*other_size, torch.zeros(0, 5))]
    axes = {
        "p2": {0: "n", 2: "h2", 3: "w2"},
        "p3": {0: "n", 2: "h3", 3: "w3"},
        "rois": {0: "k"},
        "out": {0: "k"},
    }
    for kind in KINDS:
        module = TwoLevelPooling(kind).eval()
        buffer = io.BytesIO()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                traced_with,
                buffer,
                dynamo=False,
                opset_version=OPSET,
                input_names=["p2", "p3", "rois"],
                output_names=["out"],
                dynamic_axes=axes,
            )
        session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
        for p2, p3, rois in runs:
            (out,) = session.run(None, {"p2": p2.numpy(), "p3": p3.numpy(), "rois": rois.numpy()})
            with torch.no_grad():
                eager = module(p2, p3, rois)
            assert out.shape == (len(rois), 3, 4, 4)
            assert len(rois) == 0 or np.abs(out).max() > 0.1
            torch.testing.assert_close(torch.from_numpy(out), eager, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["align_max", "warp_max"])
def test_tracing_a_max_kind_with_an_adaptive_grid_is_refused(kind):
    generator = torch.Generator().manual_seed(6)
    inputs = (*two_levels(generator), rois_on_two_levels(generator, 6))
    with warnings.catch_warnings(), pytest.raises(ValueError, match="sampling_ratio > 0"):
        warnings.simplefilter("ignore")
        torch.jit.trace(TwoLevelPooling(kind, sampling_ratio=0), inputs)
    # eager, the adaptive grid is fine
    assert TwoLevelPooling(kind, sampling_ratio=0)(*inputs).shape == (6, 3, 4, 4)
