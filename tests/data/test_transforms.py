import pytest
import torch

from maskrcnn.data.transforms import Compose, RandomHorizontalFlip, ResizeShortestSide, resized_size


def sample(height=60, width=90):
    """An image with two rectangles, their masks and their exact boxes."""
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(2, height, width, dtype=torch.uint8)
    masks[0, 5:20, 10:40] = 1
    masks[1, 30:58, 61:90] = 1
    target = {
        "boxes": torch.tensor([[10.0, 5.0, 40.0, 20.0], [61.0, 30.0, 90.0, 58.0]]),
        "labels": torch.tensor([1, 2]),
        "masks": masks,
        "image_id": 4,
        "file_name": "x.png",
    }
    return image, target


def mask_boxes(masks):
    """(G, H, W) masks -> (G, 4) xyxy boxes around their pixels (pixel edges)."""
    boxes = []
    for mask in masks:
        ys, xs = torch.nonzero(mask, as_tuple=True)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


def generator(seed):
    return torch.Generator().manual_seed(seed)


def test_resize_draws_short_sides_only_from_min_sizes():
    resize = ResizeShortestSide((30, 45, 50), max_size=1000)
    short_sides = set()
    for seed in range(40):
        image, target = resize(*sample(), generator(seed))
        short_sides.add(min(image.shape[-2:]))
        assert target["masks"].shape[-2:] == image.shape[-2:]
    assert short_sides == {30, 45, 50}


def test_resize_keeps_the_long_side_within_max_size():
    image, target = ResizeShortestSide((120,), max_size=150)(*sample(60, 90), generator(0))
    assert tuple(image.shape) == (3, 100, 150)
    assert resized_size((100, 400), 200, 500).tolist() == [125, 500]
    assert resized_size((400, 100), 200, 10_000).tolist() == [800, 200]
    # floor(333 * 1333 / 1000) = floor(443.889): the floor, as torchvision's resize
    assert resized_size((333, 1000), 800, 1333).tolist() == [443, 1333]
    # the same rule on a traced-style (2,) shape tensor
    assert resized_size(torch.tensor([480, 640]), 800, 1333).tolist() == [800, 1066]


def test_resize_scales_boxes_exactly_with_the_image_and_keeps_masks_consistent():
    image, target = sample(60, 90)
    resized, out = ResizeShortestSide((47,), max_size=1000)(image, target, generator(0))
    height, width = resized.shape[-2:]
    scale = torch.tensor([width / 90, height / 60, width / 90, height / 60])
    assert torch.allclose(out["boxes"], target["boxes"] * scale)
    assert out["masks"].dtype == torch.uint8 and set(out["masks"].unique().tolist()) <= {0, 1}
    assert (mask_boxes(out["masks"]) - out["boxes"]).abs().max() <= 1.0
    assert out["labels"] is target["labels"] and out["image_id"] == 4 and out["file_name"] == "x.png"
    assert type(out["boxes"]) is torch.Tensor and type(out["masks"]) is torch.Tensor


def test_resize_of_the_same_size_and_of_empty_targets():
    image, target = sample(60, 90)
    same, out = ResizeShortestSide((60,), max_size=1000)(image, target, generator(0))
    assert same is image and out is target
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    empty["masks"] = torch.zeros(0, 60, 90, dtype=torch.uint8)
    resized, out = Compose([ResizeShortestSide((30,), 1000), RandomHorizontalFlip(1.0)])(
        image, empty, generator(0)
    )
    assert resized.shape == (3, 30, 45) and out["boxes"].shape == (0, 4) and out["masks"].shape == (0, 30, 45)


def test_flip_moves_image_boxes_and_masks_together():
    image, target = sample()
    flipped, out = RandomHorizontalFlip(p=1.0)(image, target, generator(0))
    assert torch.equal(flipped, image.flip(-1))
    assert torch.equal(out["masks"], target["masks"].flip(-1))
    assert torch.equal(mask_boxes(out["masks"]), out["boxes"])
    assert out["boxes"].tolist() == [[50.0, 5.0, 80.0, 20.0], [0.0, 30.0, 29.0, 58.0]]


def test_flip_probability():
    image, target = sample()
    assert RandomHorizontalFlip(p=0.0)(image, target, generator(0))[0] is image
    flips = [RandomHorizontalFlip(0.5)(image, target, generator(s))[0] is not image for s in range(40)]
    assert 5 < sum(flips) < 35


def test_same_seed_same_outcome_and_seeds_eventually_differ():
    transform = Compose([ResizeShortestSide((30, 40, 50, 60), 1000), RandomHorizontalFlip()])
    image, target = sample()
    torch.manual_seed(0)  # the global generator must not matter
    first = transform(image, target, generator(7))
    torch.manual_seed(1)
    again = transform(image, target, generator(7))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1]["boxes"], again[1]["boxes"])
    outcomes = set()
    for seed in range(20):
        resized, out = transform(image, target, generator(seed))
        outcomes.add((tuple(resized.shape), float(out["boxes"][0, 0])))
        assert torch.allclose(mask_boxes(out["masks"]), out["boxes"], atol=1.0)
    assert len(outcomes) > 2


def test_invalid_arguments():
    with pytest.raises(ValueError):
        ResizeShortestSide((), 100)
    with pytest.raises(ValueError):
        ResizeShortestSide((0,), 100)
    with pytest.raises(ValueError):
        RandomHorizontalFlip(1.5)


# Keypoints: nose (no partner), left_eye, right_eye; the second instance's right eye is unlabelled.
KEYPOINT_FLIP = (0, 2, 1)


def keypoint_sample():
    image, target = sample()
    target["keypoints"] = torch.tensor(
        [
            [[25.0, 12.0, 2.0], [15.0, 8.0, 2.0], [35.0, 8.0, 1.0]],
            [[75.5, 44.0, 2.0], [65.0, 35.0, 1.0], [0.0, 0.0, 0.0]],
        ]
    )
    return image, target


def test_resize_scales_keypoints_by_the_boxes_factors_and_keeps_their_flags():
    image, target = keypoint_sample()
    resized_image, resized = ResizeShortestSide(45, max_size=1000)(image, target)
    assert resized_image.shape[1:] == (45, 67)  # 90 * 0.75 = 67.5, floored: x and y scale differently
    points, box_factors = resized["keypoints"], resized["boxes"] / target["boxes"]
    torch.testing.assert_close(points[..., 0], target["keypoints"][..., 0] * 67 / 90)
    torch.testing.assert_close(points[..., 1], target["keypoints"][..., 1] * 45 / 60)
    torch.testing.assert_close(box_factors, torch.tensor([67 / 90, 45 / 60]).repeat(2, 2))
    assert torch.equal(points[..., 2], target["keypoints"][..., 2])


def test_flip_mirrors_keypoints_as_the_boxes_and_swaps_left_and_right():
    image, target = keypoint_sample()
    _, flipped = RandomHorizontalFlip(1.0, KEYPOINT_FLIP)(image, target)
    before, after = target["keypoints"], flipped["keypoints"]
    # The boxes' rule, x -> W - x: a point at a box's left edge lands at the mirrored box's right edge.
    assert flipped["boxes"][0, 2] == 90 - target["boxes"][0, 0]
    assert after[0, 0].tolist() == [90 - 25.0, 12.0, 2.0]  # the nose stays the nose
    assert after[0, 1].tolist() == [90 - 35.0, 8.0, 1.0]  # the mirrored right eye is the new left eye
    assert after[0, 2].tolist() == [90 - 15.0, 8.0, 2.0]
    assert after[1, 1].tolist() == [0.0, 0.0, 0.0]  # an unlabelled point stays unlabelled, at 0, 0
    assert after[1, 2].tolist() == [90 - 65.0, 35.0, 1.0]
    # Flipping twice gives the target back.
    flip = RandomHorizontalFlip(1.0, KEYPOINT_FLIP)
    _, twice = flip(*flip(image, target))
    assert torch.equal(twice["keypoints"], before)


def test_flip_of_a_target_with_keypoints_needs_the_flip_map():
    image, target = keypoint_sample()
    with pytest.raises(ValueError, match="keypoint_flip"):
        RandomHorizontalFlip(1.0)(image, target)
    image, plain = sample()
    RandomHorizontalFlip(1.0)(image, plain)  # without keypoints it is not needed
    with pytest.raises(ValueError, match="reorder the keypoints"):
        RandomHorizontalFlip(0.5, (0, 0, 1))
    with pytest.raises(ValueError, match="3 entries for 2 keypoints"):
        RandomHorizontalFlip(1.0, KEYPOINT_FLIP)(image, {"keypoints": torch.zeros(1, 2, 3)})
