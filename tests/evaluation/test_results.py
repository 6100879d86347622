import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO

from maskrcnn.evaluation.results import detections_to_coco, mask_to_polygons, write_json_atomic

HEIGHT, WIDTH = 60, 80


def disk(cy=30, cx=40, radius=20):
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def square(top=10, left=15, side=25):
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


def detections(masks, labels=None):
    count = len(masks)
    return {
        "boxes": torch.tensor([[10.0, 5.0, 30.5, 25.25]] * count),
        "scores": torch.linspace(0.9, 0.5, count),
        "labels": torch.tensor(labels if labels is not None else [1] * count),
        "masks": torch.from_numpy(np.stack(masks))
        if count
        else torch.zeros(0, HEIGHT, WIDTH, dtype=torch.bool),
    }


def polygon_area(flat):
    x, y = np.array(flat[0::2]), np.array(flat[1::2])
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def test_rle_decodes_back_to_the_mask():
    masks = [disk(), square(), np.zeros((HEIGHT, WIDTH), dtype=bool)]

    entries = detections_to_coco(7, detections(masks))

    for entry, mask in zip(entries, masks):
        rle = dict(entry["segmentation"], counts=entry["segmentation"]["counts"].encode())
        assert (mask_util.decode(rle).astype(bool) == mask).all()
        assert entry["segmentation"]["size"] == [HEIGHT, WIDTH]


def test_box_score_and_ids():
    entry = detections_to_coco(7, detections([disk()]))[0]

    assert entry["image_id"] == 7
    assert entry["bbox"] == [10.0, 5.0, 20.5, 20.25]  # xyxy -> xywh
    assert entry["score"] == pytest.approx(0.9, abs=1e-5)
    assert entry["category_id"] == 1  # no mapping: the label is the category id


def test_category_ids_map_labels_to_non_contiguous_ids():
    dets = detections([disk()] * 3, labels=[1, 2, 3])

    mapped = detections_to_coco(1, dets, category_ids={1: 3, 2: 17, 3: 90})

    assert [e["category_id"] for e in mapped] == [3, 17, 90]
    with pytest.raises(ValueError, match="label 3"):
        detections_to_coco(1, dets, category_ids={1: 3, 2: 17})


def test_entries_are_json_serialisable_with_plain_types():
    entries = detections_to_coco(np.int64(3), detections([disk(), square()]))
    entries += detections_to_coco(4, detections([disk()]), polygons=True)

    assert json.loads(json.dumps(entries)) == entries
    assert all(type(e["image_id"]) is int and type(e["score"]) is float for e in entries)


@pytest.mark.parametrize("mask", [disk(), square(), disk(radius=3)], ids=["disk", "square", "small disk"])
def test_polygon_area_matches_the_mask(mask):
    polygons = detections_to_coco(1, detections([mask]), polygons=True)[0]["segmentation"]

    assert len(polygons) == 1
    assert all(len(p) >= 6 and len(p) % 2 == 0 for p in polygons)
    # what polygons.py promises: the region's pixel count, and pycocotools draws the same pixels
    assert polygon_area(polygons[0]) == mask.sum()
    rasterized = mask_util.decode(mask_util.merge(mask_util.frPyObjects(polygons, HEIGHT, WIDTH)))
    assert (rasterized.astype(bool) == mask).all()


def test_polygons_trace_every_region_and_fill_holes():
    ring = disk(radius=20) & ~disk(radius=8)
    separate = square(top=2, left=2, side=5) | square(top=50, left=70, side=6)

    ring_polygons = mask_to_polygons(ring)
    separate_polygons = mask_to_polygons(separate)

    assert len(ring_polygons) == 1 and polygon_area(ring_polygons[0]) == disk(radius=20).sum()
    assert sorted(polygon_area(p) for p in separate_polygons) == [25, 36]
    assert mask_to_polygons(np.zeros((5, 5), dtype=bool)) == []


def test_single_pixels_and_diagonal_touches():
    mask = np.zeros((6, 6), dtype=bool)
    mask[1, 1] = mask[2, 2] = True  # touching at a corner: one 8-connected region
    mask[4, 4] = True

    polygons = mask_to_polygons(mask)

    assert len(polygons) == 2
    assert sorted(polygon_area(p) for p in polygons) == [1, 2]
    assert all(len(p) >= 6 for p in polygons)


def test_results_load_with_pycocotools():
    ground_truth = COCO()
    ground_truth.dataset = {
        "images": [{"id": 1, "height": HEIGHT, "width": WIDTH}, {"id": 2, "height": HEIGHT, "width": WIDTH}],
        "categories": [{"id": 3, "name": "a"}, {"id": 17, "name": "b"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 3,
                "bbox": [20, 10, 40, 40],
                "area": 1200,
                "iscrowd": 0,
                "segmentation": [[20, 10, 60, 10, 60, 50, 20, 50]],
            },
        ],
    }
    ground_truth.createIndex()
    mapping = {1: 3, 2: 17}
    results = detections_to_coco(1, detections([disk(), square()], labels=[1, 2]), category_ids=mapping)
    results += detections_to_coco(2, detections([]), category_ids=mapping)

    loaded = ground_truth.loadRes(json.loads(json.dumps(results)))

    assert len(loaded.getAnnIds()) == 2
    assert (loaded.annToMask(loaded.anns[1]).astype(bool) == disk()).all()
    assert loaded.anns[2]["category_id"] == 17


def test_write_json_atomic_replaces_the_file(tmp_path):
    path = tmp_path / "sub" / "out.json"
    write_json_atomic({"old": 1}, path)
    write_json_atomic([{"new": 2}], path)

    assert json.loads(path.read_text()) == [{"new": 2}]
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]  # no temporary left behind


def test_write_json_atomic_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "out.json"
    write_json_atomic({"old": 1}, path)

    with pytest.raises(TypeError):
        write_json_atomic({"bad": object()}, path)

    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_keypoints_become_coco_x_y_1_triples_with_their_scores():
    found = detections([disk(), square()])
    found["keypoints"] = torch.tensor(
        [[[12.3456, 7.0, 1.0], [20.0, 9.999, 1.0]], [[30.0, 20.0, 1.0], [15.5, 24.25, 0.0]]]
    )
    found["keypoint_scores"] = torch.tensor([[3.14159, -0.5], [0.25, 7.0]])
    entries = detections_to_coco(7, found)
    assert entries[0]["keypoints"] == [12.35, 7.0, 1, 20.0, 10.0, 1]
    # COCO asks for v = 1 in results, whatever the prediction's third column holds.
    assert entries[1]["keypoints"] == [30.0, 20.0, 1, 15.5, 24.25, 1]
    assert entries[0]["keypoint_scores"] == [3.1416, -0.5] and entries[1]["keypoint_scores"] == [0.25, 7.0]
    assert json.loads(json.dumps(entries)) == entries
    assert "keypoints" not in detections_to_coco(7, detections([disk()]))[0]


def test_keypoints_of_the_wrong_shape_are_refused():
    found = detections([disk(), square()])
    found["keypoints"] = torch.zeros(1, 4, 3)
    with pytest.raises(ValueError, match=r"keypoints must be \(N, K, 3\) with N=2"):
        detections_to_coco(7, found)
    found["keypoints"] = torch.zeros(2, 4, 3)
    found["keypoint_scores"] = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"keypoint_scores must be \(N, K\)"):
        detections_to_coco(7, found)
