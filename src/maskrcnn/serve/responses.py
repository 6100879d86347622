"""What the server answers, as JSON-ready dicts: an image's detections (POST /v1/predict) and
the model's description (GET /v1/model).

A detection is {"box": [x, y, w, h], "score", "label", "class_name", "category_id", "mask"} and,
for a keypoint model, "keypoints" [x1, y1, 1, ...] and "keypoint_scores". Box, score, category
id, mask and keypoints are the COCO results entry of `engine.results.detections_to_coco` (its
bbox and segmentation), so the server and `maskrcnn predict` give the same numbers and masks
(for an image that had its pass alone; a shared pass rounds otherwise, batching.py).
"""

import dataclasses

import numpy as np
import torch

from maskrcnn.box_masks import BoxMasks
from maskrcnn.evaluation.coco import label_to_category
from maskrcnn.evaluation.results import detections_to_coco
from maskrcnn.modeling.mask_rcnn import MaskRCNN


def keep_scoring(detections: dict, score_threshold: float) -> dict:
    """The detections scoring at least `score_threshold` (a batch ran at the lowest threshold
    of its requests; each request keeps what its own asks for). Every per-detection entry is
    indexed alike: tensors (N, ...) and a tiled prediction's BoxMasks."""
    scores = detections["scores"]
    keep = (scores >= score_threshold).cpu()
    if bool(keep.all()):
        return detections
    kept = {}
    for key, value in detections.items():
        if isinstance(value, BoxMasks):
            kept[key] = value.select(keep.numpy())
        elif isinstance(value, torch.Tensor) and len(value) == len(scores):
            kept[key] = value[keep.to(value.device)]
        else:
            kept[key] = value
    return kept


def detections_json(model: MaskRCNN, detections: dict, polygons: bool) -> list[dict]:
    """One image's detections -> the API's entries, best score first.

    detections: boxes (N, 4) xyxy, scores (N,), labels (N,), masks (N, H, W) bool or BoxMasks,
    and for keypoint models keypoints (N, K, 3) and keypoint_scores (N, K), as `predict` returns
    them. polygons: masks as lists of flat polygons instead of COCO RLE.
    """
    entries = detections_to_coco(0, detections, category_ids=label_to_category(model), polygons=polygons)
    labels = np.asarray(
        detections["labels"].cpu() if torch.is_tensor(detections["labels"]) else detections["labels"]
    )
    names = model.class_names
    answer = []
    for entry, label in zip(entries, labels.reshape(-1).tolist()):
        item = {
            "box": entry["bbox"],
            "score": entry["score"],
            "label": int(label),
            "class_name": names[label] if 0 <= label < len(names) else f"class_{label}",
            "category_id": entry["category_id"],
        }
        if "segmentation" in entry:
            item["mask"] = entry["segmentation"]
        for key in ("keypoints", "keypoint_scores"):
            if key in entry:
                item[key] = entry[key]
        answer.append(item)
    # Stable: equal scores keep the model's order.
    return sorted(answer, key=lambda item: -item["score"])


def model_json(model: MaskRCNN, limits: dict, device: str) -> dict:
    """GET /v1/model: the classes (no background), keypoints, input settings, the whole config,
    the server's limits and the device."""
    config = model.config
    categories = label_to_category(model)
    classes = [
        {
            "label": label,
            "name": model.class_names[label],
            "category_id": categories[label] if categories else label,
        }
        for label in range(1, config.num_classes)
    ]
    keypoints = None
    if config.keypoints:
        head = config.keypoint_head
        names = list(head.names) or [f"keypoint_{i}" for i in range(1, head.num_keypoints + 1)]
        keypoints = {"names": names, "skeleton": [list(pair) for pair in head.skeleton]}
    return {
        "classes": classes,
        "num_classes": len(classes),  # the classes listed, as a client counts them
        "num_labels": config.num_classes,  # labels 0..num_labels-1; 0 is the background
        "keypoints": keypoints,
        "input": _plain(dataclasses.asdict(config.input)),
        "config": _plain(dataclasses.asdict(config)),
        "limits": limits,
        "device": device,
    }


def _plain(value):
    """Tuples as lists, all the way down (JSON has no tuples; a client compares lists)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
