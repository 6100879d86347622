"""FPN level assignment (FPN paper, eq. 1) and multi-level RoI pooling against torchvision."""

from collections import OrderedDict

import pytest
import torch
import torchvision
from torchvision.ops.poolers import LevelMapper, MultiScaleRoIAlign

from maskrcnn.ops import MultiScaleRoIPooler, assign_fpn_levels

STRIDES = (4, 8, 16, 32)
IMAGE_SIZE = (512, 640)  # both multiples of 32, so every level's map is exactly image size / stride


def square(side: float, x: float = 10.0, y: float = 20.0) -> list[float]:
    return [x, y, x + side, y + side]


# assign_fpn_levels


@pytest.mark.parametrize(
    ("side", "level"),
    [(224, 4), (112, 3), (448, 5), (56, 2), (160, 3), (300, 4), (400, 4)],
)
def test_canonical_sizes_map_to_their_level(side, level):
    boxes = torch.tensor([square(side)])
    assert assign_fpn_levels(boxes, 2, 5).tolist() == [level]


def test_exact_powers_of_two_stay_on_their_level():
    """sqrt(area) = 224 * 2^k lands exactly on level 4 + k, whatever the aspect ratio, offset or dtype."""
    boxes = torch.tensor(
        [
            square(56),
            square(112),
            square(224),
            square(448),
            [0.0, 0.0, 112.0, 448.0],  # sqrt(112 * 448) = 224
            [5.0, 7.0, 5.0 + 448.0, 7.0 + 112.0],
            [0.0, 0.0, 28.0, 112.0],  # sqrt(28 * 112) = 56
            [1000.0, 2000.0, 1224.0, 2224.0],
        ]
    )
    expected = [2, 3, 4, 5, 4, 4, 2, 4]
    assert assign_fpn_levels(boxes, 2, 5).tolist() == expected
    assert assign_fpn_levels(boxes.double(), 2, 5).tolist() == expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float_rounding_below_a_power_of_two_keeps_the_level(dtype):
    """Far from the origin, x2 - x1 of a 112- or 224-pixel box rounds a hair below it (111.99997 in float32);
    such a box still belongs to the level its nominal size names."""
    corners = [
        (403.67, 404.67, 112.0),
        (288.23, 289.23, 224.0),
        (289.34, 290.34, 224.0),
        (400.34, 401.34, 112.0),
    ]
    boxes = torch.tensor([[x, y, x + side, y + side] for x, y, side in corners], dtype=dtype)
    sides = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    assert (sides < torch.tensor([112.0, 224.0, 224.0, 112.0], dtype=dtype)).any(), "the case must round down"
    assert assign_fpn_levels(boxes, 2, 5).tolist() == [3, 4, 4, 3]


def test_just_below_a_power_of_two_drops_a_level():
    boxes = torch.tensor([square(223.9), square(111.9), square(447.5), square(55.9)])
    assert assign_fpn_levels(boxes, 1, 5).tolist() == [3, 2, 4, 1]


def test_tiny_boxes_clamp_to_min_level_and_huge_to_max_level():
    boxes = torch.tensor([square(1.0), square(0.01), square(0.0), square(20.0), square(1e4), square(900.0)])
    assert assign_fpn_levels(boxes, 2, 5).tolist() == [2, 2, 2, 2, 5, 5]
    assert assign_fpn_levels(boxes, 3, 4).tolist() == [3, 3, 3, 3, 4, 4]
    assert assign_fpn_levels(boxes, 2, 5).dtype == torch.int64


def test_canonical_size_and_level_are_parameters():
    boxes = torch.tensor([square(100.0), square(200.0), square(50.0)])
    assert assign_fpn_levels(boxes, 1, 6, canonical_size=100.0, canonical_level=3).tolist() == [3, 4, 2]


def test_level_assignment_matches_torchvision_level_mapper():
    generator = torch.Generator().manual_seed(0)
    sides = torch.exp(torch.empty(500).uniform_(0.0, 7.5, generator=generator))
    aspect = torch.exp(torch.empty(500).uniform_(-1.0, 1.0, generator=generator))
    corner = torch.rand(500, 2, generator=generator) * 300
    boxes = torch.cat((corner, corner + torch.stack((sides * aspect, sides / aspect), 1)), 1)
    # Include the exact powers of two, where rounding matters.
    boxes = torch.cat((boxes, torch.tensor([square(56.0 * 2**k) for k in range(-2, 5)])))
    reference = LevelMapper(k_min=2, k_max=5)([boxes]) + 2
    assert torch.equal(assign_fpn_levels(boxes, 2, 5), reference)


# MultiScaleRoIPooler


def pyramid(generator: torch.Generator, num_images: int = 2, channels: int = 8) -> list[torch.Tensor]:
    """Random P2-P5 maps of a batch of IMAGE_SIZE images."""
    height, width = IMAGE_SIZE
    return [torch.randn(num_images, channels, height // s, width // s, generator=generator) for s in STRIDES]


def boxes_on_all_levels(generator: torch.Generator, count: int) -> torch.Tensor:
    """(count + 8, 4) boxes in the image, sqrt(area) from 8 to ~500 pixels, plus boxes at level boundaries."""
    height, width = IMAGE_SIZE
    sides = torch.exp(torch.empty(count).uniform_(2.0, 6.2, generator=generator))
    aspect = torch.exp(torch.empty(count).uniform_(-0.4, 0.4, generator=generator))
    box_w = (sides * aspect).clamp(max=width - 1)
    box_h = (sides / aspect).clamp(max=height - 1)
    x1 = torch.rand(count, generator=generator) * (width - box_w)
    y1 = torch.rand(count, generator=generator) * (height - box_h)
    boxes = torch.stack((x1, y1, x1 + box_w, y1 + box_h), 1)
    boundaries = torch.tensor([square(s, 3.0, 5.0) for s in (56, 112, 224, 448, 55.5, 111.5, 223.5, 447.5)])
    return torch.cat((boxes, boundaries))


def torchvision_pooler_output(features, boxes, output_size, sampling_ratio=2):
    reference = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size, sampling_ratio)
    named = OrderedDict((str(i), f) for i, f in enumerate(features))
    return reference(named, boxes, [IMAGE_SIZE] * len(boxes))


@pytest.mark.parametrize("grad_enabled", [True, False], ids=["autograd", "no-grad"])
@pytest.mark.parametrize("output_size", [7, 14])
def test_equals_torchvision_multiscale_roi_align(output_size, grad_enabled):
    generator = torch.Generator().manual_seed(output_size)
    features = pyramid(generator)
    boxes = [boxes_on_all_levels(generator, 40), boxes_on_all_levels(generator, 25)]
    levels = assign_fpn_levels(torch.cat(boxes), 2, 5)
    for level in (2, 3, 4, 5):
        assert (levels == level).sum() >= 3, f"the boxes should cover level {level}"

    pooler = MultiScaleRoIPooler(output_size, STRIDES, sampling_ratio=2)
    with torch.set_grad_enabled(grad_enabled):  # the two paths put rows in place differently
        ours = pooler(features, boxes)
    reference = torchvision_pooler_output(features, boxes, output_size)
    assert ours.shape == (sum(len(b) for b in boxes), 8, output_size, output_size)
    assert ours.shape == reference.shape
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)


def test_gradients_equal_torchvision_multiscale_roi_align():
    generator = torch.Generator().manual_seed(1)
    features = pyramid(generator, channels=4)
    boxes = [boxes_on_all_levels(generator, 20), boxes_on_all_levels(generator, 10)]
    ours_inputs = [f.clone().requires_grad_(True) for f in features]
    reference_inputs = [f.clone().requires_grad_(True) for f in features]
    ours = MultiScaleRoIPooler(7, STRIDES, sampling_ratio=2)(ours_inputs, boxes)
    reference = torchvision_pooler_output(reference_inputs, boxes, 7)
    upstream = torch.randn(reference.shape, generator=generator)
    (ours * upstream).sum().backward()
    (reference * upstream).sum().backward()
    for ours_input, reference_input in zip(ours_inputs, reference_inputs):
        assert reference_input.grad.abs().sum() > 0, "every level should receive some RoIs"
        torch.testing.assert_close(ours_input.grad, reference_input.grad, rtol=1e-4, atol=1e-4)


def test_pool_by_level_gives_the_same_rows_and_gradients_grouped_by_level():
    generator = torch.Generator().manual_seed(2)
    features = [f.requires_grad_(True) for f in pyramid(generator, channels=4)]
    boxes = [boxes_on_all_levels(generator, 20), boxes_on_all_levels(generator, 10)]
    pooler = MultiScaleRoIPooler(7, STRIDES, sampling_ratio=2)
    grouped, order = pooler.pool_by_level(features, boxes)
    levels = assign_fpn_levels(torch.cat(boxes), 2, 5)
    assert sorted(order.tolist()) == list(range(len(levels)))
    assert torch.all(levels[order][1:] >= levels[order][:-1]), "rows grouped by level"
    assert grouped.is_contiguous(memory_format=torch.channels_last)

    upstream = torch.randn(grouped.shape, generator=generator)
    (grouped * upstream).sum().backward()
    grouped_grads = [f.grad.clone() for f in features]
    for f in features:
        f.grad = None
    in_place = pooler(features, boxes)
    torch.testing.assert_close(grouped, in_place[order], rtol=0, atol=0)
    (in_place[order] * upstream).sum().backward()
    for grouped_grad, feature in zip(grouped_grads, features):
        torch.testing.assert_close(grouped_grad, feature.grad, rtol=1e-5, atol=1e-6)


def as_rows(boxes: list[torch.Tensor]) -> torch.Tensor:
    """Per-image (Ki, 4) boxes -> (K, 5) [image index, x1, y1, x2, y2] in the same order."""
    return torch.cat([torch.cat((torch.full((len(b), 1), float(i)), b), 1) for i, b in enumerate(boxes)])


@pytest.mark.parametrize("grad_enabled", [True, False], ids=["autograd", "no-grad"])
@pytest.mark.parametrize("strides", [STRIDES, (16,)], ids=["fpn", "c4"])
def test_rows_with_image_indices_equal_per_image_boxes_in_any_order(strides, grad_enabled):
    """(K, 5) RoIs, their images interleaved, pool what the per-image lists give for the same RoIs."""
    generator = torch.Generator().manual_seed(9)
    height, width = IMAGE_SIZE
    features = [torch.randn(2, 4, height // s, width // s, generator=generator) for s in strides]
    boxes = [boxes_on_all_levels(generator, 15), boxes_on_all_levels(generator, 9)]
    rows = as_rows(boxes)
    shuffle = torch.randperm(len(rows), generator=generator)
    assert not torch.equal(rows[shuffle, 0], rows[:, 0].sort().values), "the images should interleave"
    pooler = MultiScaleRoIPooler(7, strides, sampling_ratio=2)
    with torch.set_grad_enabled(grad_enabled):
        from_lists = pooler(features, boxes)
        from_rows = pooler(features, rows[shuffle])
        grouped, order = pooler.pool_by_level(features, rows[shuffle])
        # the image index is read: the same boxes pooled from the other image differ
        other_image = rows[shuffle].clone()
        other_image[:, 0] = 1 - other_image[:, 0]
        assert not torch.allclose(pooler(features, other_image), from_rows, atol=1e-3)
    torch.testing.assert_close(from_rows, from_lists[shuffle], rtol=0, atol=0)
    torch.testing.assert_close(grouped, from_lists[shuffle][order], rtol=0, atol=0)


def test_levels_without_rois_get_a_zero_gradient():
    """Every level is pooled, also one without RoIs: its map stays in the graph."""
    generator = torch.Generator().manual_seed(10)
    features = [f.requires_grad_(True) for f in pyramid(generator, channels=3)]
    boxes = [torch.tensor([square(20.0), square(40.0)]), torch.tensor([square(224.0)])]
    assert assign_fpn_levels(torch.cat(boxes), 2, 5).tolist() == [2, 2, 4]
    pooler = MultiScaleRoIPooler(7, STRIDES, sampling_ratio=2)
    pooled, _ = pooler.pool_by_level(features, boxes)
    (pooled.sum() + pooler(features, boxes).sum()).backward()
    for level, feature in zip((2, 3, 4, 5), features):
        assert feature.grad is not None, f"level {level} left the graph"
        assert (feature.grad.abs().sum() > 0) == (level in (2, 4)), level


def test_each_roi_is_pooled_from_its_assigned_level_only():
    """Hand-built: a pyramid whose level l is the constant l; each RoI's output is its level's constant."""
    height, width = IMAGE_SIZE
    features = [
        torch.full((1, 2, height // s, width // s), float(level)) for s, level in zip(STRIDES, (2, 3, 4, 5))
    ]
    boxes = [torch.tensor([square(20.0), square(112.0), square(224.0), square(448.0), square(150.0)])]
    out = MultiScaleRoIPooler(7, STRIDES)(features, boxes)
    expected = torch.tensor([2.0, 3.0, 4.0, 5.0, 3.0])[:, None, None, None].expand(5, 2, 7, 7)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("aligned", [False, True])
def test_kind_pool_uses_roi_pool_on_the_assigned_level(aligned):
    generator = torch.Generator().manual_seed(2)
    features = pyramid(generator, channels=6)
    boxes = [boxes_on_all_levels(generator, 30), boxes_on_all_levels(generator, 15)]
    # aligned only applies to RoIAlign; RoIPool ignores it.
    ours = MultiScaleRoIPooler(7, STRIDES, kind="pool", aligned=aligned)(features, boxes)

    all_boxes = torch.cat(boxes)
    batch_index = torch.cat([torch.full((len(b), 1), float(i)) for i, b in enumerate(boxes)])
    rois = torch.cat((batch_index, all_boxes), 1)
    levels = LevelMapper(k_min=2, k_max=5)(boxes)
    expected = torch.stack(
        [
            torchvision.ops.roi_pool(features[level], roi[None], 7, 1.0 / STRIDES[level])[0]
            for roi, level in zip(rois, levels.tolist())
        ]
    )
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    # RoIPool differs from RoIAlign, so the comparison above can tell the kinds apart.
    assert not torch.allclose(ours, MultiScaleRoIPooler(7, STRIDES)(features, boxes), atol=1e-3)


def test_aligned_pooler_uses_aligned_roi_align_on_the_assigned_level():
    generator = torch.Generator().manual_seed(3)
    features = pyramid(generator, channels=3)
    boxes = [boxes_on_all_levels(generator, 20)]
    ours = MultiScaleRoIPooler(7, STRIDES, sampling_ratio=0, aligned=True)(features, boxes)
    levels = LevelMapper(k_min=2, k_max=5)(boxes)
    rois = torch.cat((torch.zeros(len(boxes[0]), 1), boxes[0]), 1)
    expected = torch.stack(
        [
            torchvision.ops.roi_align(features[level], roi[None], 7, 1.0 / STRIDES[level], 0, True)[0]
            for roi, level in zip(rois, levels.tolist())
        ]
    )
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


def test_single_level_pools_every_roi_from_that_map():
    """C4-style: one stride-16 map, every RoI pooled from it whatever its size."""
    generator = torch.Generator().manual_seed(4)
    height, width = IMAGE_SIZE
    c4 = torch.randn(2, 8, height // 16, width // 16, generator=generator)
    boxes = [boxes_on_all_levels(generator, 12), boxes_on_all_levels(generator, 5)]
    ours = MultiScaleRoIPooler(14, (16,), sampling_ratio=2)([c4], boxes)
    reference = torchvision.ops.roi_align(c4, boxes, 14, 1 / 16, 2)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)


def test_images_without_boxes():
    generator = torch.Generator().manual_seed(5)
    features = pyramid(generator, num_images=3, channels=4)
    boxes = [boxes_on_all_levels(generator, 6), torch.zeros((0, 4)), boxes_on_all_levels(generator, 4)]
    ours = MultiScaleRoIPooler(7, STRIDES, sampling_ratio=2)(features, boxes)
    reference = torchvision_pooler_output(features, boxes, 7)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)

    nothing = MultiScaleRoIPooler(7, STRIDES)(features, [torch.zeros((0, 4))] * 3)
    assert nothing.shape == (0, 4, 7, 7)


# No RoIs anywhere in the batch: (number of images, boxes).
NO_ROIS = {
    "no-images": (0, []),
    "empty-list-for-a-batch": (2, []),
    "images-without-boxes": (2, [torch.zeros((0, 4)), torch.zeros((0, 4))]),
}


@pytest.mark.parametrize("strides", [STRIDES, (16,)], ids=["fpn", "c4"])
@pytest.mark.parametrize("kind", ["align", "pool"])
@pytest.mark.parametrize("grad_enabled", [True, False], ids=["autograd", "no-grad"])
@pytest.mark.parametrize("case", NO_ROIS)
def test_no_rois_at_all(case, grad_enabled, kind, strides):
    """(0, C, S, S), and with autograd a zero gradient for every feature map."""
    num_images, boxes = NO_ROIS[case]
    height, width = IMAGE_SIZE
    features = [torch.randn(num_images, 4, height // s, width // s, requires_grad=True) for s in strides]
    pooler = MultiScaleRoIPooler(7, strides, kind=kind)
    with torch.set_grad_enabled(grad_enabled):
        pooled = pooler(features, boxes)
        grouped, order = pooler.pool_by_level(features, boxes)
    for out in (pooled, grouped):
        assert out.shape == (0, 4, 7, 7)
        assert out.dtype == torch.float32
        assert out.requires_grad == grad_enabled
    assert order.shape == (0,)
    assert order.dtype == torch.int64
    if grad_enabled:
        (pooled.sum() + grouped.sum()).backward()
        for feature in features:
            assert torch.equal(feature.grad, torch.zeros_like(feature))


def test_images_without_boxes_backpropagate_as_torchvision():
    generator = torch.Generator().manual_seed(7)
    ours_inputs = [f.requires_grad_(True) for f in pyramid(generator, num_images=2, channels=4)]
    reference_inputs = [f.detach().clone().requires_grad_(True) for f in ours_inputs]
    boxes = [torch.zeros((0, 4)), torch.zeros((0, 4))]
    MultiScaleRoIPooler(7, STRIDES, sampling_ratio=2)(ours_inputs, boxes).sum().backward()
    torchvision_pooler_output(reference_inputs, boxes, 7).sum().backward()
    for ours_input, reference_input in zip(ours_inputs, reference_inputs):
        assert torch.equal(ours_input.grad, reference_input.grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int16])
def test_narrow_box_types_are_assigned_the_levels_of_float32_boxes(dtype):
    """A 400-pixel box has an area (160000) that float16 and int16 cannot hold."""
    sides = [20.0, 56.0, 100.0, 224.0, 256.0, 400.0, 448.0, 1000.0]
    boxes = torch.tensor([square(side, 8.0, 16.0) for side in sides])
    narrow = boxes.to(dtype)
    assert torch.equal(narrow.double(), boxes.double()), "the test boxes are exact in every type"
    expected = LevelMapper(k_min=2, k_max=5)([boxes]) + 2
    assert torch.equal(assign_fpn_levels(narrow, 2, 5), expected.to(torch.int64))

    generator = torch.Generator().manual_seed(8)
    features = pyramid(generator, num_images=1, channels=3)
    pooler = MultiScaleRoIPooler(7, STRIDES, sampling_ratio=2)
    torch.testing.assert_close(pooler(features, [narrow]), pooler(features, [boxes]), rtol=0, atol=0)


def test_unknown_kind_raises():
    with pytest.raises(ValueError, match="kind"):
        MultiScaleRoIPooler(7, STRIDES, kind="bilinear")


def test_wrong_number_of_feature_maps_raises():
    generator = torch.Generator().manual_seed(6)
    features = pyramid(generator, num_images=1, channels=2)
    with pytest.raises(ValueError):
        MultiScaleRoIPooler(7, STRIDES)(features[:3], [torch.tensor([square(50.0)])])


def test_an_inverted_box_goes_to_the_finest_level_instead_of_none():
    boxes = torch.tensor([[50.0, 50.0, 10.0, 90.0], [0.0, 0.0, 224.0, 224.0], [30.0, 40.0, 30.0, 40.0]])
    assert assign_fpn_levels(boxes, 2, 5).tolist() == [2, 4, 2]
