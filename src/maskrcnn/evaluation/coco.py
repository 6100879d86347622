"""COCO evaluation: inference over a split, the results file, and pycocotools' AP.

AP is scored against the split's cleaned annotations (`coco_ground_truth`), the ones a
`CocoDataset` keeps, never against the raw file: a validation file with a broken polygon
scores as its repaired self instead of stopping pycocotools. Keypoint AP (OKS) is scored too
when asked for with the keypoints' sigmas (`evaluate_results(..., oks_sigmas=...)`).
"""

import contextlib
import io
import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from maskrcnn.choices import AP_NAMES as SUMMARY_NAMES
from maskrcnn.choices import KEYPOINT_AP_NAMES as KEYPOINT_SUMMARY_NAMES
from maskrcnn.data.coco import CocoDataset
from maskrcnn.data.coco_annotations import to_rle
from maskrcnn.engine import distributed
from maskrcnn.engine.progress import item_progress
from maskrcnn.evaluation.results import detections_to_coco
from maskrcnn.modeling.mask_rcnn import MaskRCNN

IOU_TYPES = ("bbox", "segm")
KEYPOINTS = "keypoints"


def label_to_category(model: MaskRCNN) -> dict[int, int] | None:
    """Our label -> the dataset's category id, or None when labels are category ids."""
    ids = model.config.category_ids
    return {label: category for label, category in enumerate(ids, start=1)} if ids else None


@torch.inference_mode()
def predict_dataset(
    model: MaskRCNN,
    dataset: CocoDataset,
    progress: bool = True,
    precision: str = "fp32",
    indices: Sequence[int] | None = None,
) -> list[dict]:
    """COCO results entries (bbox xywh, RLE segmentation, dataset category ids) for every image
    (or for the images at `indices`), in the dataset's order.

    precision: as for `MaskRCNN.predict`.
    """
    mapping = label_to_category(model)
    results = []
    indices = range(len(dataset)) if indices is None else indices
    for index in item_progress(indices, "eval", "image", enabled=progress):
        sample = dataset[index]
        if sample is None:  # an unreadable image skipped with --skip-bad-images
            continue
        image, target = sample
        # The dataset has normalized the image as the model's config says: not a second time.
        detections = model.predict([image], precision, normalized=True, score_threshold=0.0)[0]
        results.extend(detections_to_coco(target["image_id"], detections, category_ids=mapping))
    return results


def predict_split(
    model: MaskRCNN,
    dataset: CocoDataset,
    context: distributed.Context | None = None,
    progress: bool = True,
    precision: str = "fp32",
) -> list[dict] | None:
    """`predict_dataset` shared among the processes of `context` (torchrun): each predicts every
    world_size-th image from its rank, and rank 0 receives all the results, in the order one
    process gives them. The other ranks get None.

    If any process fails, all raise (none is left waiting for the others).
    """
    if context is None or not context.distributed:
        return predict_dataset(model, dataset, progress, precision)
    share = range(context.rank, len(dataset), context.world_size)
    results, failure = [], None
    try:
        results = predict_dataset(model, dataset, progress and context.is_main, precision, indices=share)
    except Exception as error:  # re-raised below, once every process knows
        failure = error
    distributed.raise_if_any_failed(failure, context)
    shards = distributed.gather_to_main(results, context)
    if shards is None:
        return None
    # A stable sort by image keeps each image's detections in their order.
    position = {image_id: index for index, image_id in enumerate(dataset.image_ids)}
    return sorted(itertools.chain.from_iterable(shards), key=lambda entry: position[entry["image_id"]])


def coco_ground_truth(dataset: CocoDataset) -> COCO:
    """pycocotools' index of the dataset's cleaned annotations, what AP is scored against.

    Every image of `dataset.records`, with its instances (iscrowd 0) and its crowd regions
    (iscrowd 1: COCOeval ignores detections on them); category ids as in the dataset's file,
    bbox [x, y, w, h] of the clipped box, segmentation a compressed RLE, and area the mask's
    pixel count, as pycocotools computes it from the RLE (COCOeval's small/medium/large
    ranges read it, for boxes too; OKS scales distances by it). A dataset read with keypoints
    also gives each annotation `keypoints` [x, y, v] * K and `num_keypoints` (the points with
    v > 0; COCOeval ignores objects without any, and crowd regions have none), and its keypoint
    categories their `keypoints` names and `skeleton`.
    """
    unlabelled = [0.0] * (3 * len(dataset.keypoint_names))
    images, annotations = [], []
    for record in dataset.records:
        size = {"height": record.height, "width": record.width}
        images.append({"id": record.image_id, "file_name": record.file_name, **size})
        for iscrowd, instances in ((0, record.instances), (1, record.crowd)):
            for instance in instances:
                rle = to_rle(instance.segmentation, record.height, record.width)
                x1, y1, x2, y2 = instance.box
                annotation = {
                    # ids start at 1: COCOeval takes a match to id 0 for no match.
                    "id": len(annotations) + 1,
                    "image_id": record.image_id,
                    "category_id": dataset.label_to_category_id(instance.label),
                    "segmentation": rle,
                    "area": float(mask_utils.area(rle)),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "iscrowd": iscrowd,
                }
                if dataset.has_keypoints:
                    points = list(instance.keypoints) if instance.keypoints is not None else unlabelled
                    annotation["keypoints"] = points
                    annotation["num_keypoints"] = sum(1 for v in points[2::3] if v > 0)
                annotations.append(annotation)
    names = dataset.class_names[1:]
    categories = [{"id": i, "name": name} for i, name in zip(dataset.category_ids, names)]
    for category in categories:
        if category["id"] in dataset.keypoint_category_ids:
            category["keypoints"] = list(dataset.keypoint_names)
            category["skeleton"] = [list(pair) for pair in dataset.keypoint_skeleton]
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def evaluate_results(
    ground_truth: CocoDataset | COCO | str | Path,
    results: list[dict],
    oks_sigmas: Sequence[float] | None = None,
) -> tuple[dict, dict[str, COCOeval]]:
    """Run COCOeval for boxes and masks, and for keypoints when `oks_sigmas` are given.

    ground_truth: a dataset (scored against its cleaned annotations, `coco_ground_truth`), an
    annotation file (read as a `CocoDataset` first, with its keypoints when `oks_sigmas` are
    given) or a COCO index.
    oks_sigmas: (K,) one per keypoint (engine.keypoints.resolve_oks_sigmas): keypoint AP of the
    results' `keypoints` on the ground truth's keypoint categories. None: no keypoint AP.
    Returns metrics {"bbox": {"AP": ..., ...}, "segm": {...}, "per_class": {"bbox": {name: {"AP":
    ..., "AP50": ..., ...}}, "segm": {...}}} with AP in [0, 1] exactly as pycocotools computes
    it (-1, "no such objects", is reported as NaN), with oks_sigmas also "keypoints"
    (KEYPOINT_SUMMARY_NAMES) and its per-class figures, and the COCOeval objects for plots.
    Raises ValueError if results name images that the ground truth does not have, or (with
    oks_sigmas) if the ground truth has no keypoints, other than len(oks_sigmas), or a result's
    keypoints are not 3K numbers.
    """
    if isinstance(ground_truth, (str, Path)):
        ground_truth = CocoDataset(ground_truth, "", keypoints=oks_sigmas is not None)
    coco = ground_truth if isinstance(ground_truth, COCO) else coco_ground_truth(ground_truth)
    unknown = {r["image_id"] for r in results} - set(coco.getImgIds())
    if unknown:
        listed = ", ".join(str(i) for i in sorted(unknown, key=str)[:10])
        raise ValueError(f"results name {len(unknown)} image ids not in the ground truth: {listed}")
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    metrics: dict = {"per_class": {}}
    evaluations = {}
    for iou_type in IOU_TYPES:
        entries = [r for r in results if iou_type == "bbox" or "segmentation" in r]
        with contextlib.redirect_stdout(io.StringIO()):
            detections = _detections(coco, entries)
            evaluation = COCOeval(coco, detections, iou_type)
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        metrics[iou_type] = {name: _ap(v) for name, v in zip(SUMMARY_NAMES, evaluation.stats[:6])}
        metrics["per_class"][iou_type] = per_class_ap(evaluation, names, SUMMARY_NAMES)
        if entries:  # no curve to draw without detections
            evaluations[iou_type] = evaluation
    if oks_sigmas is not None:
        evaluation = _keypoint_evaluation(coco, results, oks_sigmas, metrics, names)
        if evaluation is not None:
            evaluations[KEYPOINTS] = evaluation
    return metrics, evaluations


def _keypoint_evaluation(
    coco: COCO, results: list[dict], oks_sigmas: Sequence[float], metrics: dict, names: dict[int, str]
) -> COCOeval | None:
    """COCOeval "keypoints" on the categories that have keypoints; fills metrics["keypoints"] and
    its per-class AP, returns the evaluation (None when there was nothing to score)."""
    categories = [c for c in coco.loadCats(coco.getCatIds()) if c.get("keypoints")]
    if not categories:
        raise ValueError("keypoint AP: the ground truth has no category with keypoints to score against")
    count = len(categories[0]["keypoints"])
    if len(oks_sigmas) != count:
        raise ValueError(
            f"keypoint AP: {len(oks_sigmas)} OKS sigmas for the ground truth's {count} keypoints"
        )
    ids = [c["id"] for c in categories]
    # The COCO keypoint results format: without a bbox, pycocotools takes a detection's area
    # (for the medium/large ranges) from its keypoints' extent, as COCO's own server does.
    entries = [
        {key: r[key] for key in ("image_id", "category_id", "keypoints", "score")}
        for r in results
        if "keypoints" in r and r["category_id"] in ids
    ]
    for entry in entries:
        points = entry["keypoints"]
        if not isinstance(points, list) or len(points) != 3 * count:
            raise ValueError(
                f"keypoint AP: a result of image {entry['image_id']} has {_length(points)} keypoint values, "
                f"not 3 x {count}"
            )
    with contextlib.redirect_stdout(io.StringIO()):
        detections = _detections(coco, entries)
        evaluation = COCOeval(coco, detections, KEYPOINTS)
        evaluation.params.kpt_oks_sigmas = np.asarray(oks_sigmas, dtype=np.float64)
        evaluation.params.catIds = ids
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    metrics[KEYPOINTS] = {name: _ap(v) for name, v in zip(KEYPOINT_SUMMARY_NAMES, evaluation.stats[:5])}
    metrics["per_class"][KEYPOINTS] = per_class_ap(evaluation, names, KEYPOINT_SUMMARY_NAMES)
    return evaluation if entries else None


def _detections(coco: COCO, entries: list[dict]) -> COCO:
    """The results as pycocotools' index of them. Without any, an empty index: COCOeval then
    scores 0 where the ground truth has objects and "no such objects" where it has none, as
    with detections (pycocotools' loadRes cannot read an empty list)."""
    if entries:
        return coco.loadRes([dict(r) for r in entries])  # it adds fields to what it gets
    empty = COCO()
    empty.dataset = {"images": list(coco.dataset["images"]), "categories": list(coco.dataset["categories"])}
    empty.dataset["annotations"] = []
    empty.createIndex()
    return empty


def _length(value) -> str:
    return str(len(value)) if isinstance(value, list) else "no list of"


def per_class_ap(evaluation: COCOeval, names: dict[int, str], summary: tuple[str, ...]) -> dict[str, dict]:
    """Each category's summary figures (`summary`: AP, AP50, AP75 and the area ranges
    COCOeval has), as COCOeval's summary computes them for all categories: precision
    averaged over recall (and IoU thresholds, for AP), at the largest number of detections;
    NaN for a figure without objects of the category."""
    precision = evaluation.eval["precision"]  # (T IoUs, R recalls, K classes, A areas, M max-dets)
    thresholds = evaluation.params.iouThrs
    by_area = dict(zip(evaluation.params.areaRngLbl, range(precision.shape[3])))
    # a figure's (IoU index or all, area index)
    where = {
        "AP": (slice(None), 0),
        "APs": (slice(None), by_area.get("small")),
        "APm": (slice(None), by_area.get("medium")),
    }
    where.update({"APl": (slice(None), by_area.get("large"))})
    for name, threshold in (("AP50", 0.5), ("AP75", 0.75)):
        where[name] = (int(np.argmin(np.abs(thresholds - threshold))), 0)
    result = {}
    for k, category in enumerate(evaluation.params.catIds):
        figures = {}
        for name in summary:
            iou, area = where[name]
            values = precision[iou, :, k, area, -1] if area is not None else np.array([])
            values = values[values > -1]
            figures[name] = float(values.mean()) if values.size else float("nan")
        result[names[category]] = figures
    return result


def _ap(value: float) -> float:
    return float("nan") if value < 0 else float(value)
