"""Anchors: torchvision parity on a padded COCO-sized batch, and the geometry the paper prescribes."""

import math

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from maskrcnn.config import AnchorConfig
from maskrcnn.modeling.anchors import AnchorGenerator, cell_anchors

SIZES = (32, 64, 128, 256, 512)
RATIOS = (0.5, 1.0, 2.0)
STRIDES = (4, 8, 16, 32, 64)
PADDED_SIZE = (800, 1088)
# P2-P6 of an 800x1088 batch: P2-P5 are exactly 1/4..1/32; P6 is P5 subsampled by 2 (ceil(25 / 2) = 13).
FEATURE_SIZES = [(200, 272), (100, 136), (50, 68), (25, 34), (13, 17)]


def feature_maps(feature_sizes, num_images=2):
    """Per level an (N, C, Hl, Wl) map of those sizes (anchors read only the shape)."""
    return [torch.zeros(num_images, 1, h, w) for h, w in feature_sizes]


def generate(generator, feature_sizes, padded_size):
    """The generator's anchors per level for a batch padded to padded_size (H, W)."""
    return generator(feature_maps(feature_sizes), torch.tensor(padded_size, dtype=torch.int64))


def torchvision_anchors(sizes, aspect_ratios, padded_size, feature_sizes, num_images=2):
    """torchvision's anchors of the first image: (sum over levels of Hl * Wl * A, 4)."""
    generator = TorchvisionAnchorGenerator(sizes=sizes, aspect_ratios=aspect_ratios)
    images = ImageList(torch.zeros(num_images, 3, *padded_size), [padded_size] * num_images)
    features = [torch.zeros(num_images, 1, h, w) for h, w in feature_sizes]
    anchors = generator(images, features)
    assert len(anchors) == num_images
    torch.testing.assert_close(anchors[0], anchors[-1], rtol=0, atol=0)
    return anchors[0]


@pytest.mark.parametrize(
    ("padded_size", "feature_sizes"),
    [
        (PADDED_SIZE, FEATURE_SIZES),
        ((512, 640), [(128, 160), (64, 80), (32, 40), (16, 20), (8, 10)]),
        ((800, 1216), [(200, 304), (100, 152), (50, 76), (25, 38), (13, 19)]),
    ],
)
def test_derived_strides_equal_torchvision(padded_size, feature_sizes):
    ours = AnchorGenerator(AnchorConfig(strides_from="image"), STRIDES)
    anchors = generate(ours, feature_sizes, padded_size)
    assert [len(a) for a in anchors] == [h * w * 3 for h, w in feature_sizes]
    reference = torchvision_anchors(tuple((s,) for s in SIZES), (RATIOS,) * 5, padded_size, feature_sizes)
    assert reference.shape == (sum(h * w for h, w in feature_sizes) * 3, 4)
    torch.testing.assert_close(torch.cat(anchors), reference, rtol=0, atol=0)


def test_default_config_is_the_paper_recipe():
    config = AnchorConfig()
    assert tuple(config.sizes) == SIZES
    assert tuple(config.aspect_ratios) == RATIOS
    assert config.strides_from == "backbone"
    assert AnchorGenerator(config, STRIDES).num_anchors_per_location == 3


@pytest.mark.parametrize(("strides", "strides_from"), [([4, 8, 16, 32, 64], "backbone"), (None, "image")])
def test_configs_that_gave_strides_are_upgraded(strides, strides_from):
    """Before `strides_from`, a config listed the strides (the backbone's) or null (derived)."""
    upgraded = AnchorConfig.upgrade({"sizes": list(SIZES), "strides": strides})
    assert upgraded == {"sizes": list(SIZES), "strides_from": strides_from}
    assert AnchorConfig.upgrade({"strides_from": "image"}) == {"strides_from": "image"}


def test_fixed_strides_centre_anchors_on_multiples_of_the_stride():
    generator = AnchorGenerator(AnchorConfig(), STRIDES)
    anchors = generate(generator, FEATURE_SIZES, PADDED_SIZE)
    for level_anchors, (height, width), stride in zip(anchors, FEATURE_SIZES, STRIDES):
        assert level_anchors.dtype == torch.float32
        # (Hl * Wl * A, 4) ordered (y, x, anchor)
        grid = level_anchors.reshape(height, width, 3, 4)
        centre_x = (grid[..., 0] + grid[..., 2]) / 2
        centre_y = (grid[..., 1] + grid[..., 3]) / 2
        expected_x = (torch.arange(width, dtype=torch.float32) * stride)[None, :, None].expand(
            height, width, 3
        )
        expected_y = (torch.arange(height, dtype=torch.float32) * stride)[:, None, None].expand(
            height, width, 3
        )
        assert torch.equal(centre_x, expected_x)
        assert torch.equal(centre_y, expected_y)
        # Every location carries the same three shapes.
        shapes = grid - torch.stack((centre_x, centre_y, centre_x, centre_y), -1)
        assert torch.equal(shapes, shapes[:1, :1].expand_as(shapes))


def test_fixed_stride_differs_from_derived_stride_on_p6():
    """800 // 13 = 61, so torchvision's derived P6 stride in y is 61 where the fixed stride is 64."""
    fixed = generate(AnchorGenerator(AnchorConfig(), STRIDES), FEATURE_SIZES, PADDED_SIZE)
    derived = generate(
        AnchorGenerator(AnchorConfig(strides_from="image"), STRIDES), FEATURE_SIZES, PADDED_SIZE
    )
    for level in range(4):
        assert torch.equal(fixed[level], derived[level])
    last_row_y = lambda anchors: ((anchors[-1, 1] + anchors[-1, 3]) / 2).item()
    assert last_row_y(fixed[4]) == 12 * 64
    assert last_row_y(derived[4]) == 12 * 61


@pytest.mark.parametrize("round_to_integer", [True, False])
def test_anchor_shapes_have_area_size_squared_and_height_over_width_ratio(round_to_integer):
    config = AnchorConfig(round_to_integer=round_to_integer)
    anchors = generate(AnchorGenerator(config, STRIDES), [(2, 3)] * 5, (128, 192))
    for level_anchors, size in zip(anchors, SIZES):
        shapes = level_anchors.reshape(2, 3, 3, 4)[0, 0]  # the three anchors of one location
        for box, ratio in zip(shapes, RATIOS):
            width = (box[2] - box[0]).item()
            height = (box[3] - box[1]).item()
            if round_to_integer:
                # Each corner moves by at most half a pixel, symmetrically about the centre.
                assert abs(width - size / math.sqrt(ratio)) <= 1.0
                assert abs(height - size * math.sqrt(ratio)) <= 1.0
                assert width * height == pytest.approx(size**2, rel=(width + height + 1) / size**2)
                assert width == int(width) and height == int(height)
            else:
                assert width * height == pytest.approx(size**2, rel=1e-5)
                assert height / width == pytest.approx(ratio, rel=1e-5)


def test_cell_anchors_by_hand():
    """Size 32: ratio 0.5 -> 45.25 x 22.63, ratio 1 -> 32 x 32, ratio 2 -> 22.63 x 45.25 (width x height)."""
    half_long = 32 * math.sqrt(2) / 2  # 22.63
    half_short = 32 / math.sqrt(2) / 2  # 11.31
    expected = torch.tensor(
        [
            [-half_long, -half_short, half_long, half_short],
            [-16.0, -16.0, 16.0, 16.0],
            [-half_short, -half_long, half_short, half_long],
        ]
    )
    torch.testing.assert_close(cell_anchors((32,), RATIOS, False), expected, rtol=1e-6, atol=1e-5)
    rounded = torch.tensor(
        [[-23.0, -11.0, 23.0, 11.0], [-16.0, -16.0, 16.0, 16.0], [-11.0, -23.0, 11.0, 23.0]]
    )
    assert torch.equal(cell_anchors((32,), RATIOS, True), rounded)


def test_cell_anchors_equal_torchvision_generate_anchors():
    reference = TorchvisionAnchorGenerator().generate_anchors(list(SIZES), list(RATIOS))
    ours = cell_anchors(SIZES, RATIOS, True)
    assert ours.shape == (15, 4)
    assert torch.equal(ours, reference)


@pytest.mark.parametrize("strides_from", ["backbone", "image"])
def test_single_level_generator_places_all_sizes_and_ratios(strides_from):
    """C4: one stride-16 map carries all 5 sizes x 3 ratios at every location."""
    config = AnchorConfig(strides_from=strides_from)
    generator = AnchorGenerator(config, (16,))
    assert generator.num_anchors_per_location == 15
    (anchors,) = generate(generator, [(50, 68)], PADDED_SIZE)
    assert anchors.shape == (50 * 68 * 15, 4)
    reference = torchvision_anchors((SIZES,), (RATIOS,), PADDED_SIZE, [(50, 68)])
    torch.testing.assert_close(anchors, reference, rtol=0, atol=0)
    # Ratio-major order: anchors 0-4 are ratio 0.5 at sizes 32..512, then ratio 1, then ratio 2.
    first = anchors[:15]
    widths = first[:, 2] - first[:, 0]
    heights = first[:, 3] - first[:, 1]
    expected_heights = [round(s * math.sqrt(r) / 2) * 2 for r in RATIOS for s in SIZES]
    assert heights.tolist() == expected_heights
    assert widths[5:10].tolist() == list(map(float, SIZES))


@pytest.mark.parametrize("strides_from", ["backbone", "image"])
def test_anchors_follow_the_generator_device(strides_from):
    """The cell anchors are buffers that move with `.to(device)` (and stay out of checkpoints)."""
    generator = AnchorGenerator(AnchorConfig(strides_from=strides_from), STRIDES)
    assert generator.state_dict() == {}
    assert len(generator.cell_anchors) == 5
    assert all(a.device.type == "cpu" for a in generate(generator, [(2, 2)] * 5, (64, 64)))
    generator.to("meta")
    assert all(a.device.type == "meta" for a in generator.cell_anchors)
    features = [torch.zeros(1, 1, 2, 2, device="meta")] * 5
    anchors = generator(features, torch.tensor([64, 64], device="meta"))
    assert [a.shape for a in anchors] == [(2 * 2 * 3, 4)] * 5
    assert all(a.device.type == "meta" for a in anchors)


@pytest.mark.parametrize("num_levels", [2, 4, 6])
def test_wrong_number_of_sizes_raises(num_levels):
    strides = tuple(4 * 2**level for level in range(num_levels))
    with pytest.raises(ValueError, match="sizes"):
        AnchorGenerator(AnchorConfig(strides_from="image"), strides)


def test_unknown_strides_from_raises():
    with pytest.raises(ValueError, match="strides_from"):
        AnchorGenerator(AnchorConfig(strides_from="config"), STRIDES)
