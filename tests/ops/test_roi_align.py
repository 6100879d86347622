"""RoIAlign: our pure-PyTorch op against torchvision's compiled one, and against hand-derived values."""

import math

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from maskrcnn.ops import roi_align

FORWARD_ATOL = 1e-5
GRAD_TOL = 1e-4


def random_boxes(
    generator: torch.Generator,
    count: int,
    image_size: tuple[float, float],
    min_size: float = 1.0,
    max_size: float | None = None,
    margin: float = 0.0,
) -> torch.Tensor:
    """(count, 4) xyxy boxes in image pixels; top-left corners may lie `margin` pixels outside the image."""
    height, width = image_size
    max_size = max_size if max_size is not None else 0.75 * max(height, width)
    x1 = torch.rand(count, generator=generator) * (width + 2 * margin) - margin
    y1 = torch.rand(count, generator=generator) * (height + 2 * margin) - margin
    box_w = min_size + torch.rand(count, generator=generator) * (max_size - min_size)
    box_h = min_size + torch.rand(count, generator=generator) * (max_size - min_size)
    return torch.stack((x1, y1, x1 + box_w, y1 + box_h), dim=1)


def with_batch_index(boxes: list[torch.Tensor]) -> torch.Tensor:
    """N tensors (Ki, 4) -> (sum Ki, 5) [batch_index, x1, y1, x2, y2]."""
    return torch.cat(
        [torch.cat((torch.full((len(b), 1), float(i), dtype=b.dtype), b), 1) for i, b in enumerate(boxes)]
    )


def assert_matches_torchvision(features, rois, output_size, atol=FORWARD_ATOL, **kwargs):
    ours = roi_align(features, rois, output_size, **kwargs)
    reference = torchvision.ops.roi_align(features, rois, output_size, **kwargs)
    assert ours.shape == reference.shape
    assert ours.dtype == features.dtype
    torch.testing.assert_close(ours, reference, rtol=0, atol=atol)
    return ours


def assert_grads_match_torchvision(features, rois, output_size, tol=GRAD_TOL, **kwargs):
    """Backpropagate the same random output weights through both ops and compare d/d(features)."""
    ours_input = features.detach().clone().requires_grad_(True)
    reference_input = features.detach().clone().requires_grad_(True)
    ours = roi_align(ours_input, rois, output_size, **kwargs)
    reference = torchvision.ops.roi_align(reference_input, rois, output_size, **kwargs)
    upstream = torch.randn(reference.shape, generator=torch.Generator().manual_seed(7), dtype=features.dtype)
    (ours * upstream).sum().backward()
    (reference * upstream).sum().backward()
    assert ours_input.grad is not None
    torch.testing.assert_close(ours_input.grad, reference_input.grad, rtol=tol, atol=tol)
    return ours_input.grad


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 3, 0, -1])
@pytest.mark.parametrize("spatial_scale", [1.0, 1 / 4, 1 / 16])
def test_forward_and_grad_match_torchvision(aligned, sampling_ratio, spatial_scale):
    generator = torch.Generator().manual_seed(int(1000 * spatial_scale) + 10 * sampling_ratio + aligned)
    channels = {1.0: 3, 1 / 4: 16, 1 / 16: 1}[spatial_scale]
    features = torch.randn(2, channels, 23, 31, generator=generator)
    image_size = (23 / spatial_scale, 31 / spatial_scale)
    boxes = [
        random_boxes(generator, 9, image_size, min_size=0.5 / spatial_scale, margin=2 / spatial_scale),
        random_boxes(generator, 6, image_size, min_size=0.5 / spatial_scale, margin=2 / spatial_scale),
    ]
    rois = with_batch_index(boxes)
    kwargs = dict(spatial_scale=spatial_scale, sampling_ratio=sampling_ratio, aligned=aligned)
    out = assert_matches_torchvision(features, rois, (7, 5), **kwargs)
    assert out.abs().sum() > 0, "the comparison should cover non-trivial outputs"
    assert_grads_match_torchvision(features, rois, (7, 5), **kwargs)


@pytest.mark.parametrize("output_size", [1, 2, 7, (7, 5), (3, 9), [4, 6], (1, 8)])
@pytest.mark.parametrize("channels", [1, 4, 16])
def test_output_sizes_and_channel_counts(output_size, channels):
    generator = torch.Generator().manual_seed(channels)
    features = torch.randn(1, channels, 19, 25, generator=generator)
    rois = with_batch_index([random_boxes(generator, 8, (19, 25), margin=1.0)])
    out = assert_matches_torchvision(features, rois, output_size, sampling_ratio=2)
    height, width = (output_size, output_size) if isinstance(output_size, int) else output_size
    assert out.shape == (8, channels, height, width)
    assert_grads_match_torchvision(features, rois, output_size, sampling_ratio=2)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [2, 0])
def test_rois_partly_outside_the_map(aligned, sampling_ratio):
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(1, 5, 16, 20, generator=generator)
    rois = torch.tensor(
        [
            [0, -4.0, -3.0, 6.0, 5.0],  # over the top-left corner
            [0, 15.0, 10.0, 27.0, 19.0],  # over the bottom-right corner
            [0, -0.7, 2.0, 3.0, 8.0],  # less than a cell outside on the left
            [0, 18.5, -0.9, 20.6, 16.9],  # along the right edge
            [0, -10.0, 4.0, 30.0, 9.0],  # wider than the map on both sides
        ]
    )
    kwargs = dict(sampling_ratio=sampling_ratio, aligned=aligned)
    assert_matches_torchvision(features, rois, (4, 3), **kwargs)
    assert_grads_match_torchvision(features, rois, (4, 3), **kwargs)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [2, -1])
def test_rois_wholly_outside_the_map_pool_to_zero(aligned, sampling_ratio):
    generator = torch.Generator().manual_seed(4)
    features = torch.randn(2, 3, 12, 14, generator=generator)
    rois = torch.tensor(
        [
            [0, -20.0, -20.0, -8.0, -6.0],  # above and left
            [1, 30.0, 2.0, 40.0, 9.0],  # right
            [0, 2.0, 25.0, 9.0, 33.0],  # below
            [1, 100.0, 100.0, 300.0, 250.0],  # far away, large
        ]
    )
    kwargs = dict(sampling_ratio=sampling_ratio, aligned=aligned)
    out = assert_matches_torchvision(features, rois, 3, **kwargs)
    # Every sample lies more than one cell outside the map, so bilinear interpolation reads nothing.
    assert torch.equal(out, torch.zeros_like(out))
    grad = assert_grads_match_torchvision(features, rois, 3, **kwargs)
    assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 0])
def test_rois_smaller_than_one_cell(aligned, sampling_ratio):
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(1, 4, 10, 10, generator=generator)
    rois = torch.tensor(
        [
            [0, 3.2, 4.1, 3.5, 4.4],
            [0, 0.0, 0.0, 0.25, 0.5],
            [0, 8.6, 8.8, 8.9, 9.0],
            [0, 5.01, 2.02, 5.03, 2.9],
        ]
    )
    kwargs = dict(sampling_ratio=sampling_ratio, aligned=aligned)
    assert_matches_torchvision(features, rois, (2, 3), **kwargs)
    assert_grads_match_torchvision(features, rois, (2, 3), **kwargs)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 0, -1])
def test_degenerate_zero_size_rois(aligned, sampling_ratio):
    generator = torch.Generator().manual_seed(6)
    features = torch.randn(1, 3, 9, 11, generator=generator)
    rois = torch.tensor(
        [
            [0, 4.0, 4.0, 4.0, 4.0],  # a point
            [0, 2.0, 3.0, 8.0, 3.0],  # zero height
            [0, 5.5, 1.0, 5.5, 7.0],  # zero width
            [0, 0.0, 0.0, 0.0, 0.0],  # the corner
            [0, 11.0, 9.0, 11.0, 9.0],  # the opposite corner, on the border
        ]
    )
    kwargs = dict(sampling_ratio=sampling_ratio, aligned=aligned)
    out = assert_matches_torchvision(features, rois, (3, 2), **kwargs)
    assert torch.isfinite(out).all()
    assert_grads_match_torchvision(features, rois, (3, 2), **kwargs)


INVERTED_ROIS = torch.tensor([[0, 6.0, 5.0, 2.0, 8.0], [0, 1.0, 7.0, 4.0, 2.5], [0, 9.0, 8.0, 3.0, 1.0]])


@pytest.mark.parametrize(("aligned", "sampling_ratio"), [(False, 2), (False, 0), (True, 2)])
def test_inverted_rois(aligned, sampling_ratio):
    """x2 < x1 or y2 < y1: not valid boxes, but the op must still behave like torchvision's."""
    features = torch.randn(1, 2, 9, 11, generator=torch.Generator().manual_seed(8))
    kwargs = dict(sampling_ratio=sampling_ratio, aligned=aligned)
    assert_matches_torchvision(features, INVERTED_ROIS, (2, 2), **kwargs)
    assert_grads_match_torchvision(features, INVERTED_ROIS, (2, 2), **kwargs)


def test_inverted_rois_with_adaptive_sampling_and_aligned_are_empty():
    """With aligned=True nothing clamps a negative extent, so ceil(extent / bins) <= 0 samples are taken and
    the bins average nothing (torchvision's CPU kernel rejects this case, its CUDA kernel returns 0)."""
    features = torch.randn(1, 2, 9, 11, generator=torch.Generator().manual_seed(8))
    out = roi_align(features, INVERTED_ROIS, (2, 2), sampling_ratio=0, aligned=True)
    assert torch.equal(out, torch.zeros(3, 2, 2, 2))


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [2, 0])
def test_very_large_rois(aligned, sampling_ratio):
    generator = torch.Generator().manual_seed(9)
    features = torch.randn(1, 4, 12, 15, generator=generator)
    rois = torch.tensor(
        [
            [0, -100.0, -80.0, 150.0, 120.0],  # ~15x the map, centred on it
            [0, -300.0, 5.0, 20.0, 260.0],  # long and thin, mostly outside
            [0, 0.0, 0.0, 240.0, 192.0],  # the map is its top-left sixteenth
        ]
    )
    kwargs = dict(spatial_scale=1.0, sampling_ratio=sampling_ratio, aligned=aligned)
    assert_matches_torchvision(features, rois, (4, 5), **kwargs)
    assert_grads_match_torchvision(features, rois, (4, 5), **kwargs)


def test_batch_index_selects_the_image():
    generator = torch.Generator().manual_seed(10)
    features = torch.randn(3, 6, 14, 18, generator=generator)
    boxes = [random_boxes(generator, n, (56, 72), margin=4.0) for n in (4, 0, 7)]
    rois = with_batch_index(boxes)
    # Interleave images so that RoIs of one image are not contiguous.
    rois = rois[torch.randperm(len(rois), generator=generator)]
    out = assert_matches_torchvision(features, rois, 5, spatial_scale=0.25, sampling_ratio=2)
    for index, roi in enumerate(rois):
        image = int(roi[0])
        alone = roi_align(features[image : image + 1], torch.cat((torch.zeros(1), roi[1:]))[None], 5, 0.25, 2)
        torch.testing.assert_close(out[index : index + 1], alone, rtol=0, atol=FORWARD_ATOL)
    assert_grads_match_torchvision(features, rois, 5, spatial_scale=0.25, sampling_ratio=2)


def test_list_of_boxes_form_equals_tensor_form_and_torchvision():
    generator = torch.Generator().manual_seed(11)
    features = torch.randn(3, 5, 16, 16, generator=generator)
    boxes = [random_boxes(generator, n, (64, 64), margin=8.0) for n in (3, 5, 2)]
    kwargs = dict(spatial_scale=0.25, sampling_ratio=0, aligned=True)
    from_list = roi_align(features, boxes, (6, 4), **kwargs)
    from_tensor = roi_align(features, with_batch_index(boxes), (6, 4), **kwargs)
    reference = torchvision.ops.roi_align(features, boxes, (6, 4), **kwargs)
    assert from_list.shape == (10, 5, 6, 4)
    torch.testing.assert_close(from_list, reference, rtol=0, atol=FORWARD_ATOL)
    torch.testing.assert_close(from_list, from_tensor, rtol=0, atol=0)
    assert_grads_match_torchvision(features, boxes, (6, 4), **kwargs)


def test_tuple_of_boxes_is_accepted():
    generator = torch.Generator().manual_seed(12)
    features = torch.randn(2, 2, 8, 8, generator=generator)
    boxes = (random_boxes(generator, 2, (8, 8)), random_boxes(generator, 3, (8, 8)))
    torch.testing.assert_close(
        roi_align(features, boxes, 3, sampling_ratio=2),
        roi_align(features, list(boxes), 3, sampling_ratio=2),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize(
    "boxes",
    [torch.zeros((0, 5)), [torch.zeros((0, 4)), torch.zeros((0, 4))], []],
    ids=["tensor", "list-of-empty", "empty-list"],
)
@pytest.mark.parametrize("output_size", [7, (7, 5)])
def test_empty_rois(boxes, output_size):
    features = torch.randn(2, 6, 10, 12, requires_grad=True)
    out = roi_align(features, boxes, output_size, sampling_ratio=2)
    height, width = (output_size, output_size) if isinstance(output_size, int) else output_size
    assert out.shape == (0, 6, height, width)
    assert out.dtype == features.dtype
    if not isinstance(boxes, list) or boxes:
        assert out.shape == torchvision.ops.roi_align(features, boxes, output_size, sampling_ratio=2).shape


@pytest.mark.parametrize(
    ("num_images", "boxes"),
    [
        (2, torch.zeros((0, 5))),
        (2, [torch.zeros((0, 4)), torch.zeros((0, 4))]),
        (2, []),
        (0, torch.zeros((0, 5))),
        (0, []),
    ],
    ids=["tensor", "list-of-empty", "empty-list", "no-images", "no-images-empty-list"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_empty_rois_give_a_zero_feature_gradient(num_images, boxes, dtype):
    """A batch without RoIs still backpropagates: a zero gradient, as torchvision's, not an error."""
    features = torch.randn(num_images, 6, 10, 12, dtype=dtype, requires_grad=True)
    boxes = [b.to(dtype) for b in boxes] if isinstance(boxes, list) else boxes.to(dtype)
    out = roi_align(features, boxes, (7, 5), sampling_ratio=2)
    assert out.shape == (0, 6, 7, 5)
    assert out.dtype == dtype
    assert out.requires_grad
    out.sum().backward()
    assert features.grad.shape == features.shape
    assert features.grad.dtype == dtype
    assert torch.equal(features.grad, torch.zeros_like(features))
    if not isinstance(boxes, list) or boxes:  # torchvision's list form needs at least one tensor
        reference_input = features.detach().clone().requires_grad_(True)
        torchvision.ops.roi_align(reference_input, boxes, (7, 5), sampling_ratio=2).sum().backward()
        assert torch.equal(features.grad, reference_input.grad)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize(
    "shape", [(1, 3, 0, 8), (1, 3, 8, 0), (1, 0, 8, 8)], ids=["no-rows", "no-columns", "no-channels"]
)
def test_rois_on_an_empty_map_pool_to_zero(shape, aligned):
    """No cell to read: every bin is 0, as for a RoI wholly outside the map (torchvision crashes here)."""
    features = torch.randn(shape, requires_grad=True)
    rois = torch.tensor([[0, 1.0, 1.0, 4.0, 4.0], [0, -3.0, 2.0, 20.0, 6.0]])
    out = roi_align(features, rois, (3, 2), sampling_ratio=2, aligned=aligned)
    assert out.shape == (2, shape[1], 3, 2)
    assert out.dtype == features.dtype
    assert torch.equal(out, torch.zeros(out.shape))
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(8))
    (out * upstream).sum().backward()
    assert torch.equal(features.grad, torch.zeros(shape))


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [2, 0])
def test_float64(aligned, sampling_ratio):
    generator = torch.Generator().manual_seed(13)
    features = torch.randn(2, 4, 13, 17, generator=generator, dtype=torch.float64)
    boxes = [random_boxes(generator, 6, (104, 136), min_size=2.0, margin=10.0).double() for _ in range(2)]
    rois = with_batch_index(boxes)
    kwargs = dict(spatial_scale=1 / 8, sampling_ratio=sampling_ratio, aligned=aligned)
    out = assert_matches_torchvision(features, rois, (5, 4), atol=1e-12, **kwargs)
    assert out.dtype == torch.float64
    assert_grads_match_torchvision(features, rois, (5, 4), tol=1e-10, **kwargs)


def test_float64_gradcheck():
    generator = torch.Generator().manual_seed(14)
    features = torch.randn(1, 2, 6, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.5, 1.2, 5.3, 4.9], [0, -1.0, 2.0, 3.5, 7.5]], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x: roi_align(x, rois, (3, 2), sampling_ratio=2, aligned=True), (features,)
    )


def test_realistic_size():
    """A P2-sized map (1/4 of an 800x1088 image) with 64 RoIs of 256 channels at 14x14."""
    generator = torch.Generator().manual_seed(15)
    features = torch.randn(1, 256, 200, 272, generator=generator)
    rois = with_batch_index([random_boxes(generator, 64, (800, 1088), min_size=4.0, max_size=300.0)])
    assert_matches_torchvision(features, rois, 14, spatial_scale=0.25, sampling_ratio=2)


# Hand-derived values, independent of torchvision.


@pytest.mark.parametrize("sampling_ratio", [1, 2, 3, 0])
def test_linear_map_gives_bin_centres(sampling_ratio):
    """Bilinear interpolation of a linear function is exact, and the samples of a bin are symmetric about its
    centre, so RoIAlign of f(y, x) = a*y + b*x + c inside the map is f at each bin centre."""
    height, width = 20, 24
    a, b, c = 2.0, -3.0, 0.5
    ys = torch.arange(height, dtype=torch.float64)[:, None]
    xs = torch.arange(width, dtype=torch.float64)[None, :]
    features = (a * ys + b * xs + c)[None, None].float()
    x1, y1, x2, y2 = 2.0, 3.0, 14.0, 11.0  # 12 x 8 pixels -> bins of 3 x 2 pixels
    out = roi_align(features, torch.tensor([[0, x1, y1, x2, y2]]), 4, sampling_ratio=sampling_ratio)
    centre_y = y1 + (torch.arange(4, dtype=torch.float64) + 0.5) * (y2 - y1) / 4
    centre_x = x1 + (torch.arange(4, dtype=torch.float64) + 0.5) * (x2 - x1) / 4
    expected = a * centre_y[:, None] + b * centre_x[None, :] + c
    torch.testing.assert_close(out[0, 0].double(), expected, rtol=0, atol=1e-4)


def test_aligned_shifts_by_half_a_pixel():
    """aligned=True maps pixel corners to the feature grid: the box (x1, y1, x2, y2) samples a linear map
    half a cell lower than aligned=False does."""
    ys = torch.arange(16, dtype=torch.float32)[:, None]
    xs = torch.arange(16, dtype=torch.float32)[None, :]
    features = (ys * 100 + xs)[None, None]
    rois = torch.tensor([[0, 4.0, 4.0, 10.0, 10.0]])
    plain = roi_align(features, rois, 3, sampling_ratio=2, aligned=False)
    aligned = roi_align(features, rois, 3, sampling_ratio=2, aligned=True)
    torch.testing.assert_close(plain - aligned, torch.full_like(plain, 0.5 * 100 + 0.5), rtol=0, atol=1e-4)
    # Bin centres of the 6-pixel box with 2-pixel bins: 5, 7, 9.
    centres = torch.tensor([5.0, 7.0, 9.0])
    torch.testing.assert_close(plain[0, 0], centres[:, None] * 100 + centres[None, :], rtol=0, atol=1e-4)


def test_constant_map_gives_the_constant():
    features = torch.full((1, 3, 10, 10), 2.5)
    rois = torch.tensor([[0, 0.0, 0.0, 9.0, 9.0], [0, 3.3, 1.7, 4.1, 8.8], [0, -0.5, -0.5, 9.5, 9.5]])
    for sampling_ratio in (1, 2, 0):
        out = roi_align(features, rois, (3, 4), sampling_ratio=sampling_ratio)
        torch.testing.assert_close(out, torch.full_like(out, 2.5), rtol=0, atol=1e-6)


def test_single_sample_reads_four_neighbours():
    """One 1x1 output with one sample at (y, x) = (2.25, 3.75): the bilinear mix of four cells."""
    features = torch.randn(1, 1, 6, 6, generator=torch.Generator().manual_seed(16))
    rois = torch.tensor([[0, 3.25, 1.75, 4.25, 2.75]])  # 1x1 box, its centre is the only sample
    out = roi_align(features, rois, 1, sampling_ratio=1)
    f = features[0, 0]
    expected = 0.75 * (0.25 * f[2, 3] + 0.75 * f[2, 4]) + 0.25 * (0.25 * f[3, 3] + 0.75 * f[3, 4])
    torch.testing.assert_close(out[0, 0, 0, 0], expected, rtol=0, atol=1e-6)


def test_adaptive_sampling_ratio_uses_ceil_of_bin_size():
    """sampling_ratio <= 0 picks ceil(RoI size / output size) samples per bin: for a 6-pixel-wide bin of a
    quadratic map that is 6 samples (mean of x^2 over them differs from 2 or 3 samples)."""
    xs = torch.arange(40, dtype=torch.float64)
    features = (xs**2)[None, None, None, :].expand(1, 1, 4, 40).contiguous()
    rois = torch.tensor([[0, 10.0, 0.0, 16.0, 1.0]], dtype=torch.float64)  # one bin, 6 cells wide
    out = roi_align(features, rois, 1, sampling_ratio=0)

    def expected_mean(grid: int) -> float:
        # Interpolating x^2 linearly between integers: value at s is floor(s)^2 + frac * (2 floor(s) + 1).
        total = 0.0
        for i in range(grid):
            s = 10.0 + (i + 0.5) * 6 / grid
            low = math.floor(s)
            total += low**2 + (s - low) * (2 * low + 1)
        return total / grid

    assert out.item() == pytest.approx(expected_mean(6), abs=1e-9)
    assert expected_mean(6) != pytest.approx(expected_mean(2), abs=1e-3)
    for ratio in (-1, 0):
        assert roi_align(features, rois, 1, sampling_ratio=ratio).item() == pytest.approx(expected_mean(6))


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(
    data=st.data(),
    num_images=st.integers(1, 2),
    channels=st.integers(1, 4),
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    output_size=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    sampling_ratio=st.sampled_from([-1, 0, 1, 2, 3]),
    aligned=st.booleans(),
    spatial_scale=st.sampled_from([1.0, 0.5, 0.25]),
)
def test_property_matches_torchvision(
    data, num_images, channels, height, width, output_size, sampling_ratio, aligned, spatial_scale
):
    coordinate = st.floats(-8.0, 20.0 / spatial_scale, allow_nan=False, width=32)
    box = st.tuples(
        st.integers(0, num_images - 1),
        coordinate,
        coordinate,
        st.floats(0.0, 16.0, width=32),
        st.floats(0.0, 16.0, width=32),
    )
    raw = data.draw(st.lists(box, min_size=1, max_size=6))
    rois = torch.tensor([[i, x, y, x + w / spatial_scale, y + h / spatial_scale] for i, x, y, w, h in raw])
    seed = data.draw(st.integers(0, 2**16))
    features = torch.randn(num_images, channels, height, width, generator=torch.Generator().manual_seed(seed))
    kwargs = dict(spatial_scale=spatial_scale, sampling_ratio=sampling_ratio, aligned=aligned)
    assert_matches_torchvision(features, rois, output_size, **kwargs)
    assert_grads_match_torchvision(features, rois, output_size, **kwargs)


@pytest.mark.parametrize(
    "boxes",
    [
        torch.zeros((3, 4)),
        torch.zeros((3, 6)),
        torch.zeros(5),
        torch.zeros((2, 3, 5)),
        [torch.zeros((2, 5))],
        [torch.zeros((2, 4)), torch.zeros(4)],
        [torch.zeros((1, 2, 4))],
    ],
    ids=["K4", "K6", "1d", "3d", "list-K5", "list-1d", "list-3d"],
)
def test_bad_box_shapes_raise(boxes):
    features = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError):
        roi_align(features, boxes, 2)
