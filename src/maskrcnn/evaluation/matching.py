"""Detections against objects, image by image: the overlaps the confusion matrix and the
microscopy tools' accuracy count (COCO AP has its own matching, in pycocotools).

Overlap is mask IoU (box IoU for detections without masks), computed by pycocotools on
the RLEs; a detection that lies on a crowd region (its intersection with the region is at
least the IoU threshold of its area, as COCOeval measures crowd overlap) is neither a match nor
a false detection.
"""

from dataclasses import dataclass

import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.coco import COCO


@dataclass
class ImageOverlaps:
    """One image: its objects and its detections (score >= the threshold, highest first).

    true_labels (G,) and predicted_labels (D,): category ids; ious (D, G) float64;
    crowd (D,): each detection's largest overlap with a crowd region (0 without one).
    """

    image_id: int
    true_labels: np.ndarray
    predicted_labels: np.ndarray
    ious: np.ndarray
    crowd: np.ndarray


def image_overlaps(ground_truth: COCO, results: list[dict], score_threshold: float) -> list[ImageOverlaps]:
    """Every image of `ground_truth` (in its order), with the results on it scoring at least
    `score_threshold`. Masks are compared when every counted result has one, else boxes."""
    kept = [r for r in results if r["score"] >= score_threshold]
    use_masks = bool(kept) and all("segmentation" in r for r in kept)
    by_image: dict[int, list[dict]] = {}
    for result in sorted(kept, key=lambda r: -r["score"]):
        by_image.setdefault(result["image_id"], []).append(result)
    overlaps = []
    for image_id in ground_truth.getImgIds():
        objects = ground_truth.loadAnns(ground_truth.getAnnIds(imgIds=[image_id]))
        found = by_image.get(image_id, [])
        solid = [o for o in objects if not o.get("iscrowd", 0)]
        crowds = [o for o in objects if o.get("iscrowd", 0)]
        ious = _iou(found, solid, use_masks, crowd=False)
        crowd = _iou(found, crowds, use_masks, crowd=True)
        overlaps.append(
            ImageOverlaps(
                image_id,
                np.array([o["category_id"] for o in solid], dtype=np.int64),
                np.array([r["category_id"] for r in found], dtype=np.int64),
                ious,
                crowd.max(axis=1) if crowd.shape[1] else np.zeros(len(found)),
            )
        )
    return overlaps


def _iou(detections: list[dict], objects: list[dict], use_masks: bool, crowd: bool) -> np.ndarray:
    if not detections or not objects:
        return np.zeros((len(detections), len(objects)), dtype=np.float64)
    key = "segmentation" if use_masks else "bbox"
    found = [d[key] for d in detections]
    truth = [o[key] for o in objects]
    values = mask_utils.iou(found, truth, [int(crowd)] * len(truth))
    return np.asarray(values, dtype=np.float64).reshape(len(detections), len(objects))


def greedy_pairs(ious: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """One-to-one (detection, object) pairs with IoU >= threshold, the largest IoU first.

    When the objects do not overlap one another (a label image's never do), a threshold of
    0.5 or more lets each detection pair with one object at most, so every object with a
    detection above the threshold is matched: as many pairs as the optimal (Hungarian)
    matching of the microscopy tools finds."""
    detections, objects = np.nonzero(ious >= threshold)
    order = np.argsort(-ious[detections, objects], kind="stable")
    used_d, used_g, pairs = set(), set(), []
    for index in order:
        d, g = int(detections[index]), int(objects[index])
        if d not in used_d and g not in used_g:
            used_d.add(d)
            used_g.add(g)
            pairs.append((d, g))
    return pairs
