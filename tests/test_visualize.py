import numpy as np
import pytest
import torch
from PIL import Image

from maskrcnn.visualize import MASK_ALPHA, PALETTE, display_image, draw_instances

NAMES = ("__background__", "cat", "dog")


def two_instances(height=120, width=160):
    masks = np.zeros((2, height, width), dtype=bool)
    masks[0, 20:50, 20:60] = True
    masks[1, 30:60, 70:100] = True
    boxes = np.array([[20, 20, 60, 50], [70, 30, 100, 60]], dtype=np.float32)
    return boxes, np.array([1, 2]), np.array([0.9, 0.8]), masks


def test_overlay_keeps_size_and_changes_only_drawn_pixels():
    image = np.full((120, 160, 3), 200, dtype=np.uint8)
    boxes, labels, scores, masks = two_instances()

    overlay = draw_instances(image, boxes, labels, scores, masks, NAMES)

    pixels = np.asarray(overlay)
    assert isinstance(overlay, Image.Image) and overlay.mode == "RGB"
    assert overlay.size == (160, 120)
    assert (pixels[35, 40] != image[35, 40]).any()  # inside mask 0
    assert (pixels[45, 85] != image[45, 85]).any()  # inside mask 1
    # Far below and right of every mask, box and label (labels sit above the boxes).
    assert (pixels[90:, :] == image[90:, :]).all()
    assert (pixels[:, 130:] == image[:, 130:]).all()


def test_instances_get_different_colours_from_the_palette():
    image = np.full((120, 160, 3), 128, dtype=np.uint8)
    boxes, labels, scores, masks = two_instances()

    pixels = np.asarray(draw_instances(image, boxes, labels, scores, masks, NAMES)).astype(int)

    inside_first, inside_second = pixels[35, 40], pixels[45, 85]
    assert np.abs(inside_first - inside_second).sum() > 60
    # The tint moves each pixel towards its instance's palette colour.
    for inside, colour in ((inside_first, PALETTE[0]), (inside_second, PALETTE[1])):
        assert np.abs(inside - colour).sum() < np.abs(128 - colour).sum()


def test_mask_outline_is_darker_than_fill():
    image = np.full((120, 160, 3), 255, dtype=np.uint8)
    boxes, labels, scores, masks = two_instances()
    boxes = boxes + np.array([-5, -5, 5, 5], dtype=np.float32)  # keep the box off the outline

    pixels = np.asarray(draw_instances(image, boxes, labels, scores, masks, NAMES)).astype(int)

    assert pixels[35, 20].sum() < pixels[35, 40].sum()  # left edge of mask 0 vs its inside


def test_zero_instances_returns_the_image_unchanged():
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)

    overlay = draw_instances(
        image, np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros((0, 40, 50), bool), NAMES
    )

    assert (np.asarray(overlay) == image).all()


def test_score_threshold_hides_weak_instances():
    image = np.full((120, 160, 3), 200, dtype=np.uint8)
    boxes, labels, scores, masks = two_instances()

    pixels = np.asarray(draw_instances(image, boxes, labels, scores, masks, NAMES, score_threshold=0.85))

    assert (pixels[45, 85] == image[45, 85]).all()
    assert (pixels[35, 40] != image[35, 40]).any()


def test_accepts_tensors_empty_masks_and_missing_masks():
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    boxes = torch.tensor([[5.0, 20.0, 30.0, 40.0]])
    labels, scores = torch.tensor([7]), torch.tensor([0.5])  # label beyond class_names

    with_empty_mask = draw_instances(
        image, boxes, labels, scores, torch.zeros(1, 64, 64, dtype=torch.bool), NAMES
    )
    without_masks = draw_instances(image, boxes, labels, scores, None, NAMES)

    assert np.asarray(with_empty_mask).any()  # box and label still drawn
    assert (np.asarray(with_empty_mask) == np.asarray(without_masks)).all()


def test_rejects_masks_of_another_size():
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="masks"):
        draw_instances(image, np.zeros((1, 4)), [1], [0.9], np.zeros((1, 32, 32), bool), NAMES)


def test_display_image_shows_what_the_model_sees():
    gray = torch.linspace(0, 1, 12).reshape(1, 3, 4)
    shown = display_image(gray)
    assert shown.shape == (3, 4, 3) and shown.dtype == np.uint8
    assert (shown[..., 0] == shown[..., 2]).all() and shown[0, 0, 0] == 0 and shown[-1, -1, 1] == 255
    two = torch.stack([torch.ones(3, 4), torch.full((3, 4), 0.5)])  # two stains: red and green
    assert display_image(two)[0, 0].tolist() == [255, 128, 0]
    rgb = torch.rand(3, 5, 6, generator=torch.Generator().manual_seed(0))
    expected = (rgb.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(display_image(rgb), expected)
    assert np.array_equal(display_image(torch.cat([rgb, torch.zeros(2, 5, 6)])), expected)  # first three
    with pytest.raises(ValueError, match="must be"):
        display_image(torch.zeros(5, 6))


def test_where_masks_overlap_the_best_instance_shows():
    image = np.full((120, 160, 3), 128, dtype=np.uint8)
    boxes, labels, scores, masks = two_instances()
    masks[1] = masks[0]  # the weaker instance covers the same pixels
    scores = np.array([0.8, 0.9])  # ... and is now the best

    pixels = np.asarray(draw_instances(image, boxes, labels, scores, masks, NAMES)).astype(int)

    expected = np.floor(128 * (1 - MASK_ALPHA) + PALETTE[0] * MASK_ALPHA + 0.5)  # rank 0: the best
    assert pixels[40, 40].tolist() == expected.tolist()


def one_person(points, scores):
    """One detection with a box around the given keypoints (K, 3) and their scores (K,)."""
    boxes = np.array([[20, 20, 100, 110]], dtype=np.float32)
    return boxes, np.array([1]), np.array([0.9]), np.array([points], np.float32), np.array([scores])


def test_keypoints_are_dots_and_skeleton_lines_in_the_instance_colour():
    image = np.full((120, 160, 3), 128, dtype=np.uint8)
    # Pixel (x, y) covers [x, x + 1]: a point at 40.5 is pixel 40's centre.
    points = [[40.5, 60.5, 1], [80.5, 60.5, 1], [60.5, 90.5, 1], [30.5, 80.5, 1], [90.5, 95.5, 0]]
    boxes, labels, scores, keypoints, keypoint_scores = one_person(points, [5.0, 2.0, 0.5, -1.0, 9.0])
    skeleton = [(1, 2), (1, 4), (2, 5)]  # 1-based; 4 scores too low and 5 is not labelled

    pixels = np.asarray(
        draw_instances(
            image,
            boxes,
            labels,
            scores,
            None,
            NAMES,
            keypoints=keypoints,
            keypoint_scores=keypoint_scores,
            skeleton=skeleton,
        )
    )

    colour = np.floor(PALETTE[0] + 0.5).tolist()
    for x, y in ((40, 60), (80, 60), (60, 90)):  # the drawn keypoints
        assert pixels[y, x].tolist() == colour
    assert pixels[60, 60].tolist() == colour  # on the line joining keypoints 1 and 2
    assert (pixels[75, 70] == 128).all()  # between 2 and 3, which the skeleton does not join
    assert (pixels[80, 30] == 128).all() and (pixels[70, 35] == 128).all()  # 4: below the threshold
    assert (pixels[95, 90] == 128).all() and (pixels[78, 85] == 128).all()  # 5: not labelled
    # A keypoint's dot has a ring in the label's text colour, so that it stands out from a mask.
    ring = pixels[60 - 2 : 60 + 3, 40 - 2 : 40 + 3].reshape(-1, 3).tolist()
    assert [255, 255, 255] in ring or [0, 0, 0] in ring


def test_the_keypoint_threshold_and_ground_truth_flags_choose_the_points():
    image = np.full((120, 160, 3), 128, dtype=np.uint8)
    points = [[40.5, 60.5, 2], [80.5, 60.5, 1], [60.5, 90.5, 0]]
    boxes, labels, scores, keypoints, keypoint_scores = one_person(points, [5.0, 2.0, 0.5])

    strict = np.asarray(
        draw_instances(
            image,
            boxes,
            labels,
            scores,
            None,
            NAMES,
            keypoints=keypoints,
            keypoint_scores=keypoint_scores,
            keypoint_threshold=3.0,
        )
    )
    truth = np.asarray(draw_instances(image, boxes, labels, scores, None, NAMES, keypoints=keypoints))

    assert (strict[60, 40] != 128).any() and (strict[60, 80] == 128).all()
    assert (truth[60, 40] != 128).any() and (truth[60, 80] != 128).any()  # v = 1 and 2 are labelled
    assert (truth[90, 60] == 128).all()  # v = 0 is not


def test_without_keypoints_the_overlay_is_what_it_was_and_the_best_keypoints_are_on_top():
    image = np.full((120, 160, 3), 128, dtype=np.uint8)
    boxes, labels, scores, masks = two_instances()
    plain = np.asarray(draw_instances(image, boxes, labels, scores, masks, NAMES))
    keypoints = np.zeros((2, 1, 3), np.float32)
    keypoints[:, 0] = [45.5, 40.5, 1]  # both instances put a point at the same pixel
    drawn = np.asarray(draw_instances(image, boxes, labels, scores, masks, NAMES, keypoints=keypoints))

    assert drawn[40, 45].tolist() == np.floor(PALETTE[0] + 0.5).tolist()  # rank 0, the best, on top
    changed = (drawn != plain).any(axis=2)
    assert changed[38:43, 43:48].any() and not changed[:30].any() and not changed[50:].any()
    with pytest.raises(ValueError, match="keypoints must be"):
        draw_instances(image, boxes, labels, scores, masks, NAMES, keypoints=np.zeros((3, 1, 3)))
