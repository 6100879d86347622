"""RoIPool: the op the model calls (torchvision's kernel with the project's contract) against an
independent masked-gather implementation (roi_pool_reference.py), and against hand-derived values."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from roi_pool_reference import reference_roi_pool

from maskrcnn.ops import roi_pool

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


def assert_matches_reference(features, rois, output_size, spatial_scale=1.0, atol=FORWARD_ATOL):
    ours = roi_pool(features, rois, output_size, spatial_scale)
    reference = reference_roi_pool(features, rois, output_size, spatial_scale)
    assert ours.shape == reference.shape
    assert ours.dtype == features.dtype
    torch.testing.assert_close(ours, reference, rtol=0, atol=atol)
    return ours


def assert_grads_match_reference(features, rois, output_size, spatial_scale=1.0, tol=GRAD_TOL):
    """Backpropagate the same random output weights through both ops and compare d/d(features)."""
    ours_input = features.detach().clone().requires_grad_(True)
    reference_input = features.detach().clone().requires_grad_(True)
    ours = roi_pool(ours_input, rois, output_size, spatial_scale)
    reference = reference_roi_pool(reference_input, rois, output_size, spatial_scale)
    upstream = torch.randn(reference.shape, generator=torch.Generator().manual_seed(7), dtype=features.dtype)
    (ours * upstream).sum().backward()
    (reference * upstream).sum().backward()
    assert ours_input.grad is not None
    torch.testing.assert_close(ours_input.grad, reference_input.grad, rtol=tol, atol=tol)
    return ours_input.grad


@pytest.mark.parametrize("spatial_scale", [1.0, 1 / 4, 1 / 16])
@pytest.mark.parametrize("output_size", [1, 2, 7, (7, 5), (3, 8)])
def test_forward_and_grad_match_the_reference(spatial_scale, output_size):
    generator = torch.Generator().manual_seed(int(100 * spatial_scale))
    channels = {1.0: 3, 1 / 4: 16, 1 / 16: 1}[spatial_scale]
    features = torch.randn(2, channels, 23, 31, generator=generator)
    image_size = (23 / spatial_scale, 31 / spatial_scale)
    boxes = [
        random_boxes(generator, 9, image_size, min_size=0.5 / spatial_scale, margin=2 / spatial_scale),
        random_boxes(generator, 6, image_size, min_size=0.5 / spatial_scale, margin=2 / spatial_scale),
    ]
    rois = with_batch_index(boxes)
    out = assert_matches_reference(features, rois, output_size, spatial_scale)
    height, width = (output_size, output_size) if isinstance(output_size, int) else output_size
    assert out.shape == (15, channels, height, width)
    assert out.abs().sum() > 0, "the comparison should cover non-trivial outputs"
    assert_grads_match_reference(features, rois, output_size, spatial_scale)


@pytest.mark.parametrize("channels", [1, 5, 16])
def test_half_pixel_corners_round_away_from_zero(channels):
    """Corners at x.5 after scaling: torchvision rounds like C's round(), not to even."""
    generator = torch.Generator().manual_seed(channels)
    features = torch.randn(1, channels, 12, 12, generator=generator)
    rois = torch.tensor(
        [
            [0, 2.5, 3.5, 6.5, 8.5],
            [0, -0.5, -1.5, 4.5, 2.5],
            [0, 1.5, 0.5, 11.5, 10.5],
            [0, 0.5, 0.5, 0.5, 0.5],
        ]
    )
    assert_matches_reference(features, rois, (3, 2))
    assert_matches_reference(features, rois * torch.tensor([1, 4, 4, 4, 4]), (3, 2), spatial_scale=0.25)
    assert_grads_match_reference(features, rois, (3, 2))


def test_rois_partly_outside_the_map():
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(1, 5, 16, 20, generator=generator)
    rois = torch.tensor(
        [
            [0, -8.0, -6.0, 6.0, 5.0],  # over the top-left corner
            [0, 15.0, 10.0, 33.0, 29.0],  # over the bottom-right corner: its last bins cover no cell
            [0, -10.0, 4.0, 30.0, 9.0],  # wider than the map on both sides
        ]
    )
    out = assert_matches_reference(features, rois, (4, 4))
    # The second RoI spans columns 15..33 (19 cells, bins of 4.75) and rows 10..29 (20 cells, bins of 5):
    # column bin 2 starts at 15 + floor(9.5) = 24 >= 20 and row bin 2 at 10 + 10 = 20 >= 16, so bins 2
    # and 3 along either axis cover no cell and are 0.
    assert torch.equal(out[1, :, :, 2:], torch.zeros(5, 4, 2))
    assert torch.equal(out[1, :, 2:, :], torch.zeros(5, 2, 4))
    assert (out[1, :, :2, :2] != 0).all()
    assert_grads_match_reference(features, rois, (4, 4))


def test_rois_wholly_outside_the_map_pool_to_zero():
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
    out = assert_matches_reference(features, rois, 3)
    assert torch.equal(out, torch.zeros_like(out))
    grad = assert_grads_match_reference(features, rois, 3)
    assert torch.equal(grad, torch.zeros_like(grad))


def test_tiny_and_degenerate_rois():
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(1, 4, 10, 10, generator=generator)
    rois = torch.tensor(
        [
            [0, 3.2, 4.1, 3.4, 4.3],  # inside one cell
            [0, 4.0, 4.0, 4.0, 4.0],  # a point
            [0, 2.0, 3.0, 8.0, 3.0],  # zero height
            [0, 9.0, 9.0, 9.0, 9.0],  # the last cell
            [0, 6.0, 5.0, 2.0, 8.0],  # inverted in x
        ]
    )
    out = assert_matches_reference(features, rois, (2, 3))
    # A point RoI is one cell; every bin of it reads that cell (bins are rounded outwards).
    torch.testing.assert_close(out[1], features[0, :, 4:5, 4:5].expand(4, 2, 3), rtol=0, atol=0)
    assert_grads_match_reference(features, rois, (2, 3))


def test_very_large_rois():
    generator = torch.Generator().manual_seed(9)
    features = torch.randn(1, 4, 12, 15, generator=generator)
    rois = torch.tensor(
        [
            [0, -100.0, -80.0, 150.0, 120.0],
            [0, -300.0, 5.0, 20.0, 260.0],
            [0, 0.0, 0.0, 240.0, 192.0],
        ]
    )
    assert_matches_reference(features, rois, (4, 5))
    assert_grads_match_reference(features, rois, (4, 5))


def test_batch_index_selects_the_image():
    generator = torch.Generator().manual_seed(10)
    features = torch.randn(3, 6, 14, 18, generator=generator)
    rois = with_batch_index([random_boxes(generator, n, (56, 72), margin=4.0) for n in (4, 0, 7)])
    rois = rois[torch.randperm(len(rois), generator=generator)]
    out = assert_matches_reference(features, rois, 5, spatial_scale=0.25)
    for index, roi in enumerate(rois):
        image = int(roi[0])
        alone = roi_pool(features[image : image + 1], torch.cat((torch.zeros(1), roi[1:]))[None], 5, 0.25)
        torch.testing.assert_close(out[index : index + 1], alone, rtol=0, atol=0)
    assert_grads_match_reference(features, rois, 5, spatial_scale=0.25)


def test_list_of_boxes_form_equals_tensor_form_and_torchvision():
    generator = torch.Generator().manual_seed(11)
    features = torch.randn(3, 5, 16, 16, generator=generator)
    boxes = [random_boxes(generator, n, (64, 64), margin=8.0) for n in (3, 5, 2)]
    from_list = roi_pool(features, boxes, (6, 4), 0.25)
    from_tensor = roi_pool(features, with_batch_index(boxes), (6, 4), 0.25)
    reference = reference_roi_pool(features, boxes, (6, 4), 0.25)
    assert from_list.shape == (10, 5, 6, 4)
    torch.testing.assert_close(from_list, reference, rtol=0, atol=FORWARD_ATOL)
    torch.testing.assert_close(from_list, from_tensor, rtol=0, atol=0)
    assert_grads_match_reference(features, boxes, (6, 4), 0.25)


@pytest.mark.parametrize(
    "boxes",
    [torch.zeros((0, 5)), [torch.zeros((0, 4)), torch.zeros((0, 4))], []],
    ids=["tensor", "list-of-empty", "empty-list"],
)
def test_empty_rois(boxes):
    features = torch.randn(2, 6, 10, 12)
    out = roi_pool(features, boxes, (7, 5))
    assert out.shape == (0, 6, 7, 5)
    assert out.dtype == features.dtype
    if not isinstance(boxes, list) or boxes:
        assert out.shape == reference_roi_pool(features, boxes, (7, 5)).shape


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
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_empty_rois_give_a_zero_feature_gradient(num_images, boxes, dtype):
    """A batch without RoIs still backpropagates: a zero gradient, as torchvision's, not an error."""
    features = torch.randn(num_images, 6, 10, 12, dtype=dtype, requires_grad=True)
    boxes = [b.to(dtype) for b in boxes] if isinstance(boxes, list) else boxes.to(dtype)
    out = roi_pool(features, boxes, (7, 5))
    assert out.shape == (0, 6, 7, 5)
    assert out.dtype == dtype
    assert out.requires_grad
    out.sum().backward()
    assert features.grad.shape == features.shape
    assert features.grad.dtype == dtype
    assert torch.equal(features.grad, torch.zeros_like(features))
    if not isinstance(boxes, list) or boxes:  # torchvision's list form needs at least one tensor
        reference_input = features.detach().clone().requires_grad_(True)
        reference_roi_pool(reference_input, boxes, (7, 5)).sum().backward()
        assert torch.equal(features.grad, reference_input.grad)


@pytest.mark.parametrize(
    "shape", [(1, 3, 0, 8), (1, 3, 8, 0), (1, 0, 8, 8)], ids=["no-rows", "no-columns", "no-channels"]
)
def test_rois_on_an_empty_map_pool_to_zero(shape):
    """No cell to read: every bin is 0, as for a RoI wholly outside the map (torchvision crashes here)."""
    features = torch.randn(shape, requires_grad=True)
    rois = torch.tensor([[0, 1.0, 1.0, 4.0, 4.0], [0, -3.0, 2.0, 20.0, 6.0]])
    out = roi_pool(features, rois, (3, 2))
    assert out.shape == (2, shape[1], 3, 2)
    assert out.dtype == features.dtype
    assert torch.equal(out, torch.zeros(out.shape))
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(8))
    (out * upstream).sum().backward()
    assert torch.equal(features.grad, torch.zeros(shape))


def test_float64():
    generator = torch.Generator().manual_seed(13)
    features = torch.randn(2, 4, 13, 17, generator=generator, dtype=torch.float64)
    boxes = [random_boxes(generator, 6, (104, 136), min_size=2.0, margin=10.0).double() for _ in range(2)]
    rois = with_batch_index(boxes)
    out = assert_matches_reference(features, rois, (5, 4), spatial_scale=1 / 8, atol=0)
    assert out.dtype == torch.float64
    assert_grads_match_reference(features, rois, (5, 4), spatial_scale=1 / 8, tol=0)


def test_sampling_ratio_and_aligned_are_ignored():
    generator = torch.Generator().manual_seed(14)
    features = torch.randn(1, 3, 10, 10, generator=generator)
    rois = with_batch_index([random_boxes(generator, 5, (10, 10))])
    plain = roi_pool(features, rois, 3)
    torch.testing.assert_close(roi_pool(features, rois, 3, 1.0, 4, True), plain, rtol=0, atol=0)


def test_many_rois_are_pooled_in_chunks():
    """Enough RoIs with large bins that the op must split them into several chunks."""
    generator = torch.Generator().manual_seed(15)
    features = torch.randn(1, 16, 40, 40, generator=generator)
    rois = with_batch_index([random_boxes(generator, 300, (40, 40), min_size=20.0, max_size=40.0)])
    assert_matches_reference(features, rois, 7)


# Hand-derived values, independent of torchvision.


def test_increasing_map_takes_the_last_cell_of_each_bin():
    height, width = 8, 9
    features = torch.arange(height * width, dtype=torch.float32).reshape(1, 1, height, width)
    out = roi_pool(features, torch.tensor([[0, 0.0, 0.0, 5.0, 5.0]]), 3)
    # Cells 0..5 in 3 bins of 2: the maximum of bin (i, j) is at cell (2i + 1, 2j + 1).
    index = torch.arange(3) * 2 + 1
    expected = (index[:, None] * width + index[None, :]).float()
    torch.testing.assert_close(out[0, 0], expected, rtol=0, atol=0)


def test_rounding_is_half_away_from_zero():
    """A decreasing map's maximum is the first cell of the RoI, so it shows where the RoI starts."""
    features = -torch.arange(100, dtype=torch.float32).reshape(1, 1, 10, 10)
    out = roi_pool(features, torch.tensor([[0, 2.5, 2.5, 4.4, 4.4]]), 1)
    assert out.item() == -33.0  # round(2.5) = 3; rounding half to even would start at cell 2
    out = roi_pool(features, torch.tensor([[0, 4.49, 6.5, 5.0, 7.0]]), 1)
    assert out.item() == -74.0  # row round(6.5) = 7, column round(4.49) = 4


def test_overlapping_bins_share_gradient():
    """Bins of a 3-cell RoI pooled to 2x2 overlap on the middle cell; its gradient is the sum of theirs."""
    features = torch.zeros(1, 1, 4, 4)
    features[0, 0, 1, 1] = 10.0  # the maximum of all four bins of RoI cells 0..2
    features.requires_grad_(True)
    out = roi_pool(features, torch.tensor([[0, 0.0, 0.0, 2.0, 2.0]]), 2)
    assert torch.equal(out.detach(), torch.full((1, 1, 2, 2), 10.0))
    out.backward(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]))
    expected = torch.zeros(1, 1, 4, 4)
    expected[0, 0, 1, 1] = 10.0
    assert torch.equal(features.grad, expected)


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(
    data=st.data(),
    num_images=st.integers(1, 2),
    channels=st.integers(1, 4),
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    output_size=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    spatial_scale=st.sampled_from([1.0, 0.5, 0.25]),
)
def test_property_matches_the_reference(
    data, num_images, channels, height, width, output_size, spatial_scale
):
    coordinate = st.floats(-8.0, 20.0 / spatial_scale, allow_nan=False, width=32)
    extent = st.floats(0.0, 16.0, width=32)
    box = st.tuples(st.integers(0, num_images - 1), coordinate, coordinate, extent, extent)
    raw = data.draw(st.lists(box, min_size=1, max_size=6))
    rois = torch.tensor([[i, x, y, x + w / spatial_scale, y + h / spatial_scale] for i, x, y, w, h in raw])
    seed = data.draw(st.integers(0, 2**16))
    features = torch.randn(num_images, channels, height, width, generator=torch.Generator().manual_seed(seed))
    assert_matches_reference(features, rois, output_size, spatial_scale)
    assert_grads_match_reference(features, rois, output_size, spatial_scale)


@pytest.mark.parametrize(
    "boxes",
    [
        torch.zeros((3, 4)),
        torch.zeros((3, 6)),
        torch.zeros(5),
        torch.zeros((2, 3, 5)),
        [torch.zeros((2, 5))],
        [torch.zeros((2, 4)), torch.zeros(4)],
    ],
    ids=["K4", "K6", "1d", "3d", "list-K5", "list-1d"],
)
def test_bad_box_shapes_raise(boxes):
    features = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError):
        roi_pool(features, boxes, 2)
