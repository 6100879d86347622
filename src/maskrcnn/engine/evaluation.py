"""COCO evaluation: inference over a split, the results file, and pycocotools' AP.

AP is scored against the split's cleaned annotations (`coco_ground_truth`), the ones a
`CocoDataset` keeps, never against the raw file: a validation file with a broken polygon
scores as its repaired self instead of stopping pycocotools.
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

from maskrcnn.data.coco import CocoDataset
from maskrcnn.data.coco_annotations import to_rle
from maskrcnn.engine import distributed
from maskrcnn.engine.progress import item_progress
from maskrcnn.engine.results import detections_to_coco, write_json_atomic
from maskrcnn.files import atomic_output
from maskrcnn.modeling.mask_rcnn import MaskRCNN

SUMMARY_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
IOU_TYPES = ("bbox", "segm")


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
    ranges read it, for boxes too).
    """
    images, annotations = [], []
    for record in dataset.records:
        size = {"height": record.height, "width": record.width}
        images.append({"id": record.image_id, "file_name": record.file_name, **size})
        for iscrowd, instances in ((0, record.instances), (1, record.crowd)):
            for instance in instances:
                rle = to_rle(instance.segmentation, record.height, record.width)
                x1, y1, x2, y2 = instance.box
                annotations.append(
                    {
                        # ids start at 1: COCOeval takes a match to id 0 for no match.
                        "id": len(annotations) + 1,
                        "image_id": record.image_id,
                        "category_id": dataset.label_to_category_id(instance.label),
                        "segmentation": rle,
                        "area": float(mask_utils.area(rle)),
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "iscrowd": iscrowd,
                    }
                )
    names = dataset.class_names[1:]
    categories = [{"id": i, "name": name} for i, name in zip(dataset.category_ids, names)]
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def evaluate_results(
    ground_truth: CocoDataset | COCO | str | Path, results: list[dict]
) -> tuple[dict, dict[str, COCOeval]]:
    """Run COCOeval for boxes and masks.

    ground_truth: a dataset (scored against its cleaned annotations, `coco_ground_truth`), an
    annotation file (read as a `CocoDataset` first) or a COCO index.
    Returns metrics {"bbox": {"AP": ..., ...}, "segm": {...}, "per_class": {"bbox": {name: AP},
    "segm": {...}}} with AP in [0, 1] exactly as pycocotools computes it (-1, "no such
    objects", is reported as NaN), and the COCOeval objects for plots. Raises ValueError if
    results name images that the ground truth does not have.
    """
    if isinstance(ground_truth, (str, Path)):
        ground_truth = CocoDataset(ground_truth, "")
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
        if not entries:
            metrics[iou_type] = {name: 0.0 for name in SUMMARY_NAMES}
            metrics["per_class"][iou_type] = {name: 0.0 for name in names.values()}
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            detections = coco.loadRes([dict(r) for r in entries])  # it adds fields to what it gets
            evaluation = COCOeval(coco, detections, iou_type)
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        metrics[iou_type] = {name: _ap(v) for name, v in zip(SUMMARY_NAMES, evaluation.stats[:6])}
        metrics["per_class"][iou_type] = per_class_ap(evaluation, names)
        evaluations[iou_type] = evaluation
    return metrics, evaluations


def per_class_ap(evaluation: COCOeval, names: dict[int, str]) -> dict[str, float]:
    """AP@[.5:.95] of each category (all areas, 100 detections), as COCOeval's summary computes it."""
    precision = evaluation.eval["precision"]  # (T IoUs, R recalls, K classes, A areas, M max-dets)
    result = {}
    for k, category in enumerate(evaluation.params.catIds):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        result[names[category]] = float(values.mean()) if values.size else float("nan")
    return result


def _ap(value: float) -> float:
    return float("nan") if value < 0 else float(value)


def format_metrics(metrics: dict) -> str:
    """The summary table (boxes and masks) and the per-class AP table, in percent."""
    lines = [f"| {'':<6} | " + " | ".join(f"{n:>5}" for n in SUMMARY_NAMES) + " |"]
    lines.append("|" + "-" * 8 + "|" + "|".join("-" * 7 for _ in SUMMARY_NAMES) + "|")
    for iou_type, title in (("bbox", "box"), ("segm", "mask")):
        values = metrics[iou_type]
        lines.append(f"| {title:<6} | " + " | ".join(_percent(values[n]) for n in SUMMARY_NAMES) + " |")
    lines.append("")
    width = max([len(n) for n in metrics["per_class"]["bbox"]] + [5])
    lines.append(f"| {'class':<{width}} | box AP | mask AP |")
    lines.append("|" + "-" * (width + 2) + "|--------|---------|")
    for name, box_ap in metrics["per_class"]["bbox"].items():
        mask_ap = metrics["per_class"]["segm"].get(name, float("nan"))
        lines.append(f"| {name:<{width}} | {_percent(box_ap):>6} | {_percent(mask_ap):>7} |")
    return "\n".join(lines)


def _percent(value: float) -> str:
    return "  n/a" if np.isnan(value) else f"{100 * value:5.1f}"


def plot_precision_recall(evaluations: dict[str, COCOeval], names: dict[int, str], path: Path) -> None:
    """Precision-recall curves: per IoU type, one curve at IoU 0.5 and one at 0.75 (all
    classes), and one per class at IoU 0.5."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not evaluations:
        return
    figure, axes = plt.subplots(1, len(evaluations), figsize=(6 * len(evaluations), 5), squeeze=False)
    for axis, (iou_type, evaluation) in zip(axes[0], evaluations.items()):
        recall = evaluation.params.recThrs
        precision = evaluation.eval["precision"]
        for threshold in (0.5, 0.75):
            t = int(np.argmin(np.abs(evaluation.params.iouThrs - threshold)))
            curve = _mean_over_classes(precision[t, :, :, 0, -1])
            axis.plot(recall, curve, linewidth=2.5, label=f"all classes, IoU {threshold}")
        t50 = int(np.argmin(np.abs(evaluation.params.iouThrs - 0.5)))
        for k, category in enumerate(evaluation.params.catIds):
            curve = precision[t50, :, k, 0, -1]
            if (curve > -1).any():
                axis.plot(
                    recall,
                    np.where(curve > -1, curve, np.nan),
                    linewidth=1,
                    alpha=0.8,
                    label=f"{names[category]}, IoU 0.5",
                )
        axis.set_title({"bbox": "boxes", "segm": "masks"}[iou_type])
        axis.set_xlabel("recall")
        axis.set_ylabel("precision")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1.02)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    with atomic_output(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    plt.close(figure)


def _mean_over_classes(values: np.ndarray) -> np.ndarray:
    """(R, K) precision with -1 for classes without ground truth -> (R,) mean over the others."""
    valid = values > -1
    counts = valid.sum(axis=1)
    sums = np.where(valid, values, 0).sum(axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def write_metrics(metrics: dict, path: Path) -> None:
    """metrics.json: strict JSON (an AP that does not exist, NaN, is null), written atomically."""
    write_json_atomic(metrics, path, indent=2)
