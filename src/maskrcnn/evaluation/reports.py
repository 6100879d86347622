"""What an evaluation leaves and prints, for a run's final evaluation and `maskrcnn eval`
alike: metrics.json (the summary, per-class figures, the microscopy accuracy when asked
for, the run's best model), precision_recall.png, the confusion matrix, and the tables."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools.cocoeval import COCOeval

from maskrcnn.choices import AP_NAMES
from maskrcnn.data.coco import CocoDataset
from maskrcnn.evaluation.accuracy import accuracy_report
from maskrcnn.evaluation.coco import KEYPOINTS, coco_ground_truth
from maskrcnn.evaluation.confusion import confusion_matrix, confusion_report, write_confusion
from maskrcnn.evaluation.matching import image_overlaps
from maskrcnn.evaluation.results import write_json_atomic
from maskrcnn.files import atomic_output

METRICS_FILE = "metrics.json"
PR_PLOT_FILE = "precision_recall.png"
TITLES = {"bbox": "box", "segm": "mask", KEYPOINTS: "keypoint"}


@dataclass(frozen=True)
class ReportSettings:
    """How detections are matched to objects for the confusion matrix and the accuracy (they
    count detections with score >= score_threshold, paired at IoU >= iou_threshold; the
    accuracy at each of its own IoU thresholds), and whether to compute the accuracy."""

    score_threshold: float = 0.5
    iou_threshold: float = 0.5
    accuracy: bool = False


def write_reports(
    metrics: dict,
    evaluations: dict[str, COCOeval],
    results: list[dict] | None,
    dataset: CocoDataset,
    out: Path,
    settings: ReportSettings | None = None,
    extra: dict | None = None,
) -> list[Path]:
    """metrics.json, precision_recall.png (when something was scored), and from the
    detections (`results`, COCO results entries) confusion_matrix.json and .png; with
    settings.accuracy, metrics["accuracy"] (`evaluation.accuracy`). `extra` entries are
    added to metrics.json (a run's best model). Returns the files written."""
    settings = settings or ReportSettings()
    written = []
    names = dict(zip(dataset.category_ids, dataset.class_names[1:]))
    if results is not None:
        overlaps = image_overlaps(coco_ground_truth(dataset), results, settings.score_threshold)
        counts = confusion_matrix(overlaps, list(dataset.category_ids), settings.iou_threshold)
        report = confusion_report(
            counts, list(names.values()), settings.score_threshold, settings.iou_threshold
        )
        written += write_confusion(report, out)
        if settings.accuracy:
            files = {record.image_id: record.file_name for record in dataset.records}
            metrics["accuracy"] = accuracy_report(overlaps, files, settings.score_threshold)
    write_json_atomic({**metrics, **(extra or {})}, out / METRICS_FILE, indent=2)
    written.insert(0, out / METRICS_FILE)
    if evaluations:
        plot_precision_recall(evaluations, names, out / PR_PLOT_FILE)
        written.insert(1, out / PR_PLOT_FILE)
    return written


def format_metrics(metrics: dict, types: tuple[str, ...] | None = None) -> str:
    """The summary table and one per-class table for each kind scored (boxes, masks,
    keypoints; `types` chooses among them), in percent. Keypoint AP has no small objects:
    its APs is n/a."""
    types = types or tuple(t for t in ("bbox", "segm", KEYPOINTS) if t in metrics)
    lines = _table("", [(TITLES[t], metrics[t]) for t in types])
    for iou_type in types:
        per_class = metrics["per_class"].get(iou_type, {})
        if per_class:
            lines += ["", *_table(f"{TITLES[iou_type]} AP per class", list(per_class.items()))]
    return "\n".join(lines)


def _table(title: str, rows: list[tuple[str, dict]]) -> list[str]:
    width = max([len(title)] + [len(name) for name, _ in rows] + [5])
    lines = [f"| {title:<{width}} | " + " | ".join(f"{n:>5}" for n in AP_NAMES) + " |"]
    lines.append("|" + "-" * (width + 2) + "|" + "|".join("-" * 7 for _ in AP_NAMES) + "|")
    for name, values in rows:
        cells = " | ".join(_percent(values.get(n, float("nan"))) for n in AP_NAMES)
        lines.append(f"| {name:<{width}} | {cells} |")
    return lines


def _percent(value: float | None) -> str:
    return "  n/a" if value is None or np.isnan(value) else f"{100 * value:5.1f}"


def plot_precision_recall(evaluations: dict[str, COCOeval], names: dict[int, str], path: Path) -> None:
    """Precision-recall curves: per IoU type, one curve at IoU 0.5 and one at 0.75 (all
    classes), and one per class at IoU 0.5 (for keypoints: at OKS 0.5 and 0.75)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not evaluations:
        return
    figure, axes = plt.subplots(1, len(evaluations), figsize=(6 * len(evaluations), 5), squeeze=False)
    for axis, (iou_type, evaluation) in zip(axes[0], evaluations.items()):
        match = "OKS" if iou_type == KEYPOINTS else "IoU"
        recall = evaluation.params.recThrs
        precision = evaluation.eval["precision"]
        for threshold in (0.5, 0.75):
            t = int(np.argmin(np.abs(evaluation.params.iouThrs - threshold)))
            curve = _mean_over_classes(precision[t, :, :, 0, -1])
            axis.plot(recall, curve, linewidth=2.5, label=f"all classes, {match} {threshold}")
        t50 = int(np.argmin(np.abs(evaluation.params.iouThrs - 0.5)))
        for k, category in enumerate(evaluation.params.catIds):
            curve = precision[t50, :, k, 0, -1]
            if (curve > -1).any():
                axis.plot(
                    recall,
                    np.where(curve > -1, curve, np.nan),
                    linewidth=1,
                    alpha=0.8,
                    label=f"{names[category]}, {match} 0.5",
                )
        axis.set_title({"bbox": "boxes", "segm": "masks", KEYPOINTS: "keypoints"}[iou_type])
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


def _mean_over_classes(values: np.ndarray) -> np.ndarray:
    """(R, K) precision with -1 for classes without ground truth -> (R,) mean over the others."""
    valid = values > -1
    counts = valid.sum(axis=1)
    sums = np.where(valid, values, 0).sum(axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
