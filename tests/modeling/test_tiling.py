"""Tiled inference: the tile grid, merging what tiles share, and BoxMasks."""

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from maskrcnn.box_masks import BoxMasks
from maskrcnn.data.shapes import draw_placed_shapes
from maskrcnn.evaluation.results import detections_to_coco, encode_masks, mask_to_polygons
from maskrcnn.interop.load import load_model
from maskrcnn.modeling.build import build_model
from maskrcnn.modeling.tiling import check_tiling, predict_tiled, tile_grid
from maskrcnn.testing import tiny_model_config
from maskrcnn.visualize import draw_instances


@pytest.mark.parametrize(
    "size, tile, overlap", [(1000, 256, 64), (257, 256, 0), (512, 128, 64), (100, 128, 32)]
)
def test_tile_grid_covers_the_image_with_whole_overlapping_tiles(size, tile, overlap):
    tiles = tile_grid(size, size + 37, tile, overlap)
    covered = np.zeros((size, size + 37), dtype=int)
    for t in tiles:
        covered[t.y0 : t.y1, t.x0 : t.x1] += 1
        assert t.y1 - t.y0 == min(tile, size) and t.x1 - t.x0 == min(tile, size + 37)
    assert covered.min() >= 1
    xs = sorted({t.x0 for t in tiles})
    # Neighbours share at least `overlap` pixels, so an object that small lies whole in one tile.
    assert all(b - a <= tile - overlap for a, b in zip(xs, xs[1:]))
    assert max(t.x1 for t in tiles) == size + 37


@pytest.mark.parametrize(
    "tile, overlap, message",
    [
        (32, 0, "tile 32: expected a whole number of pixels >= 64"),
        (128, 65, "tile_overlap 65: expected"),
        (128, -1, r"tile_overlap -1: expected a whole number from 0 to half of tile 128 \(64\)"),
        (None, 16, "tile_overlap 16: only with tile"),
        (128.0, 16, "tile 128.0: expected a whole number of pixels"),
    ],
)
def test_bad_tiling_is_refused(tile, overlap, message):
    with pytest.raises(ValueError, match=message):
        check_tiling(tile, overlap)


def _random_masks(count, height, width, seed=0):
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, height, width), dtype=bool)
    for mask in masks:
        y, x = rng.integers(0, height - 5), rng.integers(0, width - 5)
        mask[y : y + rng.integers(2, 20), x : x + rng.integers(2, 30)] = rng.random((1, 1)) < 2
        mask[y, x] = False  # not a plain rectangle
    masks[0] = False  # an empty one
    masks[1, :, -1] = True  # one touching the last column
    return masks


def _as_box_masks(masks):
    crops, offsets = [], []
    for mask in masks:
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if len(rows) == 0:
            crops.append(np.zeros((0, 0), bool))
            offsets.append((0, 0))
            continue
        crops.append(mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
        offsets.append((rows[0], cols[0]))
    return BoxMasks(crops, offsets, masks.shape[1:])


def test_box_masks_encode_as_their_full_size_masks():
    masks = _random_masks(6, 40, 57)
    box_masks = _as_box_masks(masks)
    assert box_masks.shape == masks.shape
    assert torch.equal(box_masks.dense(), torch.from_numpy(masks))
    assert torch.equal(box_masks[3], torch.from_numpy(masks[3]))
    rles = box_masks.to_rles()
    assert rles == encode_masks(masks)
    assert np.array_equal(mask_util.decode(rles).transpose(2, 0, 1).astype(bool), masks)
    assert box_masks.polygons() == [mask_to_polygons(m) for m in masks]
    assert box_masks.areas().tolist() == masks.sum(axis=(1, 2)).tolist()
    assert torch.equal(box_masks.select([4, 2]).dense(), torch.from_numpy(masks[[4, 2]]))
    picture = np.zeros((40, 57, 3), np.uint8)
    boxes, labels, scores = torch.tensor([[0, 0, 5, 5]] * 6), torch.ones(6, dtype=torch.int64), torch.rand(6)
    from_crops = draw_instances(picture, boxes, labels, scores, box_masks, ["bg", "a"])
    from_dense = draw_instances(picture, boxes, labels, scores, masks, ["bg", "a"])
    assert np.array_equal(np.asarray(from_crops), np.asarray(from_dense))


def test_box_masks_refuse_a_crop_outside_the_image():
    with pytest.raises(ValueError, match=r"does not fit the image 10x10"):
        BoxMasks([np.ones((4, 4), bool)], [(8, 0)], (10, 10))


class _Oracle:
    """A stand-in model that, given tiles, "detects" the true objects as far as each tile shows
    them: a perfect detector that knows nothing of the image outside the tile."""

    device = torch.device("cpu")

    def __init__(self, image, masks, labels):
        self.image, self.masks, self.labels = image, masks, labels
        self.calls = []

    def __call__(self, crops, precision, score_threshold):
        results = []
        for crop in crops:
            y0, x0 = self._where(crop)
            height, width = crop.shape[-2:]
            seen = self.masks[:, y0 : y0 + height, x0 : x0 + width]
            keep = seen.flatten(1).any(1)
            boxes = []
            for mask in seen[keep]:
                rows, cols = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
                boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
            count = int(keep.sum())
            results.append(
                {
                    "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                    "scores": torch.linspace(0.9, 0.6, count) if count else torch.zeros(0),
                    "labels": self.labels[keep],
                    "masks": seen[keep],
                }
            )
            self.calls.append(len(crops))
        return results

    def _where(self, crop):
        # Tiles are views of the image: their storage offset tells where they start.
        offset = crop.storage_offset()
        width = self.image.shape[-1]
        return (offset % (self.image.shape[-2] * width)) // width, offset % width


def test_objects_across_tile_borders_are_found_once_with_their_whole_mask():
    height, width = 300, 420
    masks = torch.zeros((5, height, width), dtype=torch.bool)
    masks[0, 100:140, 110:160] = True  # across the first vertical border (tiles at x = 0, 96, ...)
    masks[1, 80:200, 180:260] = True  # larger than the overlap: cut in every tile that holds it
    masks[2, 10:30, 10:30] = True  # inside one tile
    masks[3, 120:135, 300:330] = True  # in the strip two tiles share: seen whole by both
    masks[4, 200:260, 100:130] = True
    masks[4, 230:240, 130:200] = True  # an L shape across a corner of four tiles
    labels = torch.tensor([1, 2, 1, 2, 1])
    image = torch.rand(3, height, width)
    oracle = _Oracle(image, masks, labels)
    result = predict_tiled(oracle, image, tile=128, overlap=32, tile_batch=3)
    assert max(oracle.calls) == 3  # tiles went in batches
    assert len(result["scores"]) == 5
    found = result["masks"].dense()
    for mask, label in zip(masks, labels):
        ious = (found & mask).flatten(1).sum(1) / (found | mask).flatten(1).sum(1)
        assert ious.max() == 1.0
        assert result["labels"][ious.argmax()] == label
        rows, cols = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
        box = torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=torch.float32)
        assert torch.equal(result["boxes"][ious.argmax()], box)
    assert torch.all(result["scores"][:-1] >= result["scores"][1:])


def test_neighbouring_objects_of_one_class_stay_apart():
    height, width = 128, 300
    masks = torch.zeros((2, height, width), dtype=torch.bool)
    masks[0, 40:80, 90:101] = True  # two objects that meet in the tiles' shared strip
    masks[1, 40:80, 101:140] = True
    image = torch.rand(3, height, width)
    result = predict_tiled(_Oracle(image, masks, torch.tensor([1, 1])), image, tile=128, overlap=48)
    assert len(result["scores"]) == 2
    assert sorted(m.sum().item() for m in result["masks"].dense()) == sorted(m.sum().item() for m in masks)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(tiny_model_config(min_size=64, max_size=96)).eval()


def test_an_image_no_larger_than_a_tile_gives_the_untiled_detections(tiny_model):
    image = torch.rand(3, 90, 120, generator=torch.Generator().manual_seed(1))
    (plain,) = tiny_model.predict(image, score_threshold=0.0)
    (tiled,) = tiny_model.predict(image, score_threshold=0.0, tile=128, tile_overlap=32)
    assert len(plain["scores"]) > 0
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(tiled[key], plain[key].cpu())
    assert isinstance(tiled["masks"], BoxMasks)
    assert torch.equal(tiled["masks"].dense(), plain["masks"].cpu())
    # Their COCO entries are the same too (RLE from the crops, without full-size masks).
    assert detections_to_coco(1, tiled) == detections_to_coco(1, plain)
    assert detections_to_coco(1, tiled, polygons=True) == detections_to_coco(1, plain, polygons=True)


def test_predict_refuses_bad_tiling(tiny_model):
    with pytest.raises(
        ValueError, match=r"tile_overlap 100: expected a whole number from 0 to half of tile 128"
    ):
        tiny_model.predict(torch.rand(3, 64, 64), tile=128, tile_overlap=100)
    with pytest.raises(ValueError, match="tile_overlap 16: only with tile"):  # not ignored
        tiny_model.predict(torch.rand(3, 64, 64), tile_overlap=16)


def _placed_shapes(height, width, tile, overlap, seed=3):
    """Shapes on the borders of the tiles and between them, as the shapes data draws them."""
    rng = np.random.default_rng(seed)
    borders = sorted({t.x0 for t in tile_grid(height, width, tile, overlap)} - {0})
    spots = [40, borders[0] + 2, (borders[0] + borders[1]) // 2 + overlap // 2, borders[-1] + 8]
    placements = []
    for row, y in enumerate(spots):
        for col, x in enumerate(spots):
            centre = (x + rng.uniform(-3, 3), y + rng.uniform(-3, 3))
            placements.append((1 + (row + col) % 3, centre, 18.0))
    pixels, masks = draw_placed_shapes(rng, height, width, placements)
    return pixels, np.stack(masks), [p[0] for p in placements]


def _best_ious(result, truth):
    masks = result["masks"]
    found = masks.dense().numpy() if isinstance(masks, BoxMasks) else masks.cpu().numpy()
    inter = np.einsum("dhw,ghw->dg", found.astype(np.float32), truth.astype(np.float32))
    union = found.sum((1, 2))[:, None] + truth.sum((1, 2))[None] - inter
    return inter / np.maximum(union, 1)  # (D, G)


def _tiled_and_untiled(weights, tile=128, overlap=32):
    """The shapes placed across tile borders, detected tiled and untiled at the trained scale."""
    pixels, truth, _ = _placed_shapes(352, 352, tile, overlap)
    model = load_model(weights, device=torch.device("cpu"))
    # Tiles and the untiled reference both at the scale the model was trained at (1:1).
    model.preprocessor.min_size = model.preprocessor.max_size = tile
    (tiled,) = model.predict(pixels, tile=tile, tile_overlap=overlap, score_threshold=0.5)
    model.preprocessor.min_size = model.preprocessor.max_size = 352
    (untiled,) = model.predict(pixels, score_threshold=0.5)
    return tiled, untiled, truth


def _assert_each_shape_found_once(tiled, untiled, truth):
    tiled_ious, untiled_ious = _best_ious(tiled, truth), _best_ious(untiled, truth)
    # Every shape is found, its mask as good as at full resolution without tiles (no halves).
    tiled_best, untiled_best = tiled_ious.max(0), untiled_ious.max(0)
    assert tiled_best.min() > 0.6, tiled_best
    assert np.all(tiled_best >= untiled_best - 0.15), (tiled_best, untiled_best)
    assert tiled_best.mean() >= untiled_best.mean() - 0.05
    # Found once: no two detections of one class on the same shape (no duplicate, no halves).
    labels = tiled["labels"].numpy()
    for shape in range(len(truth)):
        on_it = labels[tiled_ious[:, shape] > 0.3]
        assert len(on_it) == len(set(on_it.tolist())), f"shape {shape}: labels {on_it}"


def test_a_trained_model_finds_each_shape_across_tile_borders_once(trained_shapes_weights):
    _assert_each_shape_found_once(*_tiled_and_untiled(trained_shapes_weights))


def test_without_the_merging_the_same_check_fails(trained_shapes_weights, monkeypatch):
    from maskrcnn.modeling import tiling

    monkeypatch.setattr(tiling, "MATCH_IOU", 1.01)  # no two tiles' masks ever match: nothing merges
    tiled, untiled, truth = _tiled_and_untiled(trained_shapes_weights)
    # the README's words: a shape found only as a half, or two detections of one class on it
    with pytest.raises(AssertionError, match=r"shape \d+: labels|> 0.6"):
        _assert_each_shape_found_once(tiled, untiled, truth)


@pytest.mark.parametrize(
    "size, tile, overlap", [(1000, 256, 128), (1001, 256, 127), (700, 128, 0), (5000, 512, 256)]
)
def test_every_pair_of_tiles_that_share_pixels_is_compared(size, tile, overlap):
    from maskrcnn.modeling.tiling import _overlapping_pairs

    tiles = tile_grid(size, size - 3, tile, overlap)
    everything = {
        (a, b)
        for a in range(len(tiles))
        for b in range(a + 1, len(tiles))
        if tiles[a].intersection(tiles[b]) is not None
    }
    assert set(_overlapping_pairs(tiles)) == everything


def test_keypoints_come_back_in_image_pixels():
    from dataclasses import replace

    torch.manual_seed(0)
    model = build_model(replace(tiny_model_config(min_size=64, max_size=96), keypoints=True)).eval()
    image = torch.rand(3, 80, 100, generator=torch.Generator().manual_seed(2))
    (plain,) = model.predict(image, score_threshold=0.0)
    (tiled,) = model.predict(image, score_threshold=0.0, tile=128)
    assert len(plain["scores"]) > 0
    assert torch.equal(tiled["keypoints"], plain["keypoints"].cpu())
    assert torch.equal(tiled["keypoint_scores"], plain["keypoint_scores"].cpu())
    # On a larger image the points of the tiles away from the origin are moved by their tile's place.
    wide = torch.cat([image, image], dim=2)[:, :, :180]
    (two_tiles,) = model.predict(wide, score_threshold=0.0, tile=100, tile_overlap=20)
    right = two_tiles["boxes"][:, 0] >= 80
    assert right.any()
    inside = (two_tiles["keypoints"][right, :, 0] >= 80) & (two_tiles["keypoints"][right, :, 0] <= 180)
    assert inside.float().mean() > 0.9
