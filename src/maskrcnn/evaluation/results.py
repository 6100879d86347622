"""Detections as COCO results entries (RLE or polygon masks) and atomic JSON files.

A COCO results file is a list of entries {image_id, category_id, bbox [x, y, w, h], score,
segmentation, and for a keypoint model keypoints [x1, y1, v1, ...]}; pycocotools' `COCO.loadRes`
and `COCOeval` read it. They accept only RLE segmentations, so polygons are for other consumers
(annotation tools, datasets).
"""

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pycocotools.mask as mask_util
import torch

from maskrcnn.box_masks import BoxMasks
from maskrcnn.files import strict_json, write_text_atomic
from maskrcnn.polygons import mask_to_polygons

__all__ = ["detections_to_coco", "encode_masks", "mask_to_polygons", "write_json_atomic"]


def detections_to_coco(
    image_id: int,
    detections: Mapping,
    category_ids: Mapping[int, int] | Sequence[int] | None = None,
    polygons: bool = False,
) -> list[dict]:
    """One image's detections -> COCO results entries, JSON-serialisable.

    detections: boxes (N, 4) xyxy in image pixels, scores (N,), labels (N,) and optionally
        masks (N, H, W) bool; tensors (any device) or numpy arrays, as `MaskRCNN.predict` returns
        (or the `BoxMasks` of a tiled prediction).
    category_ids: our label index -> the dataset's category id (a dict or a sequence indexed
        by label). None means the labels already are category ids, as for torchvision's COCO
        models, whose 91 outputs follow COCO's id layout.
    polygons: segmentation as a list of flat [x1, y1, x2, y2, ...] polygons (outer
        boundaries, holes filled) instead of RLE. Entries whose mask is empty get [].
    Without masks in `detections` the entries have no segmentation. With keypoints (N, K, 3)
    [x, y, 1] (and keypoint_scores (N, K)) in `detections`, each entry gets `keypoints`
    [x1, y1, 1, ..., xK, yK, 1] (COCO's results format: pycocotools does not read the flags and
    COCO asks for 1) and `keypoint_scores` [s1, ..., sK], each point's heatmap value.
    """
    boxes = _numpy(detections["boxes"]).astype(np.float64).reshape(-1, 4)
    scores = _numpy(detections["scores"]).astype(np.float64).reshape(-1)
    labels = _numpy(detections["labels"]).astype(np.int64).reshape(-1)
    masks = detections.get("masks")
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(
            f"detections: boxes, scores and labels differ in length ({len(boxes)}, {len(scores)}, "
            f"{len(labels)})"
        )
    segmentations = None
    if isinstance(masks, BoxMasks):  # tiled prediction: never made full size
        if len(masks) != len(boxes):
            raise ValueError(f"detections: {len(masks)} masks for {len(boxes)} boxes")
        segmentations = masks.polygons() if polygons else masks.to_rles()
    elif masks is not None:
        masks = _numpy(masks).astype(bool)
        if masks.ndim != 3 or len(masks) != len(boxes):
            raise ValueError(f"detections: masks must be (N, H, W) with N={len(boxes)}, got {masks.shape}")
        segmentations = [mask_to_polygons(m) for m in masks] if polygons else encode_masks(masks)
    keypoints, keypoint_scores = _keypoints(detections, len(boxes))

    entries = []
    for i, (box, score, label) in enumerate(zip(boxes, scores, labels)):
        x0, y0, x1, y1 = (float(v) for v in box)
        entry = {
            "image_id": int(image_id),
            "category_id": _category_id(int(label), category_ids),
            "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
            "score": round(float(score), 5),
        }
        if segmentations is not None:
            entry["segmentation"] = segmentations[i]
        if keypoints is not None:
            entry["keypoints"] = [v for x, y in keypoints[i].tolist() for v in (round(x, 2), round(y, 2), 1)]
            if keypoint_scores is not None:
                entry["keypoint_scores"] = [round(v, 4) for v in keypoint_scores[i].tolist()]
        entries.append(entry)
    return entries


def _keypoints(detections: Mapping, count: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(N, K, 2) x, y and (N, K) scores of the detections' keypoints (None for what is absent)."""
    keypoints = detections.get("keypoints")
    if keypoints is None:
        return None, None
    keypoints = _numpy(keypoints).astype(np.float64)
    if keypoints.ndim != 3 or len(keypoints) != count or keypoints.shape[2] not in (2, 3):
        raise ValueError(f"detections: keypoints must be (N, K, 3) with N={count}, got {keypoints.shape}")
    scores = detections.get("keypoint_scores")
    if scores is not None:
        scores = _numpy(scores).astype(np.float64)
        if scores.shape != keypoints.shape[:2]:
            raise ValueError(
                f"detections: keypoint_scores must be (N, K) = {keypoints.shape[:2]}, got {scores.shape}"
            )
    return keypoints[:, :, :2], scores


def encode_masks(masks: np.ndarray) -> list[dict]:
    """masks (N, H, W) bool -> N compressed RLEs {"size": [H, W], "counts": str}."""
    if len(masks) == 0:
        return []
    # pycocotools wants (H, W, N) uint8 in Fortran order, i.e. each mask column-major.
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def _category_id(label: int, category_ids) -> int:
    if category_ids is None:
        return label
    try:
        return int(category_ids[label])
    except (KeyError, IndexError):
        raise ValueError(f"label {label} has no entry in category_ids") from None


def _numpy(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def write_json_atomic(obj, path: str | os.PathLike, indent: int | None = None) -> None:
    """Strict JSON (NaN written as null) to `path` atomically: readers never see a half-written file."""
    write_text_atomic(strict_json(obj, indent=indent), path)
