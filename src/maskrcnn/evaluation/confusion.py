"""The confusion matrix: which class each object was detected as, the objects missed and the
false detections, as confusion_matrix.json and confusion_matrix.png."""

from pathlib import Path

import numpy as np

from maskrcnn.evaluation.matching import ImageOverlaps, greedy_pairs
from maskrcnn.evaluation.results import write_json_atomic
from maskrcnn.files import atomic_output

CONFUSION_JSON = "confusion_matrix.json"
CONFUSION_PLOT = "confusion_matrix.png"
BACKGROUND = "background"
# Above this many classes the cells are too small for their numbers.
MAX_ANNOTATED_CLASSES = 30


def confusion_matrix(
    overlaps: list[ImageOverlaps], category_ids: list[int], iou_threshold: float
) -> np.ndarray:
    """(C + 1, C + 1) int64 counts: row = the true class, column = the detected class, in the
    order of `category_ids`, the last row and column "background".

    In each image, detections (already those above the score threshold) and objects are paired
    one to one whatever their classes (IoU >= iou_threshold, largest first): a pair counts in
    (its object's class, its detection's class), an object without a detection in (its class,
    background) -- missed -- and a detection without an object in (background, its class) --
    a false detection -- unless it lies on a crowd region.
    """
    index = {category: i for i, category in enumerate(category_ids)}
    background = len(category_ids)
    counts = np.zeros((background + 1, background + 1), dtype=np.int64)
    for image in overlaps:
        pairs = greedy_pairs(image.ious, iou_threshold)
        for d, g in pairs:
            counts[index[int(image.true_labels[g])], index[int(image.predicted_labels[d])]] += 1
        matched_d = {d for d, _ in pairs}
        matched_g = {g for _, g in pairs}
        for g, label in enumerate(image.true_labels):
            if g not in matched_g:
                counts[index[int(label)], background] += 1
        for d, label in enumerate(image.predicted_labels):
            if d not in matched_d and image.crowd[d] < iou_threshold:
                counts[background, index[int(label)]] += 1
    return counts


def confusion_report(
    counts: np.ndarray, names: list[str], score_threshold: float, iou_threshold: float
) -> dict:
    """What confusion_matrix.json holds: the labels, the counts, and how they were matched."""
    return {
        "classes": [*names, BACKGROUND],
        "rows": "true class (background: false detections)",
        "columns": "detected class (background: missed objects)",
        "counts": counts.tolist(),
        "score_threshold": score_threshold,
        "iou_threshold": iou_threshold,
    }


def row_normalised(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (a row without counts stays zero): per true class, the share
    detected as each class."""
    sums = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, sums, out=np.zeros(counts.shape, dtype=np.float64), where=sums > 0)


def write_confusion(report: dict, out: Path) -> list[Path]:
    """confusion_matrix.json and confusion_matrix.png (counts, and rows normalised) in `out`."""
    write_json_atomic(report, out / CONFUSION_JSON, indent=2)
    plot_confusion(np.asarray(report["counts"]), report["classes"], out / CONFUSION_PLOT, report)
    return [out / CONFUSION_JSON, out / CONFUSION_PLOT]


def plot_confusion(counts: np.ndarray, labels: list[str], path: Path, report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(4.0, 0.45 * len(labels) + 2.5)
    figure, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    shares = row_normalised(counts)
    matched = f"score >= {report['score_threshold']:g}, IoU >= {report['iou_threshold']:g}"
    for axis, values, title, shown in (
        (axes[0], counts, f"counts ({matched})", lambda v: str(int(v))),
        (axes[1], shares, "shares of each true class", lambda v: f"{v:.2f}"),
    ):
        image = axis.imshow(values, cmap="Blues")
        figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
        axis.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
        axis.set_yticks(range(len(labels)), labels, fontsize=8)
        axis.set_xlabel("detected as")
        axis.set_ylabel("true class")
        axis.set_title(title, fontsize=10)
        if len(labels) <= MAX_ANNOTATED_CLASSES + 1:
            limit = values.max() if values.size else 0
            for (row, column), value in np.ndenumerate(values):
                if value:
                    color = "white" if value > 0.6 * limit else "black"
                    axis.text(column, row, shown(value), ha="center", va="center", fontsize=7, color=color)
    figure.tight_layout()
    with atomic_output(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    plt.close(figure)


def format_confusion(counts: np.ndarray, labels: list[str]) -> str:
    """The counts as a text table (rows: true class; columns: detected as)."""
    corner = "true \\ detected as"
    width = max(len(corner), *(len(label) for label in labels))
    cells = max(5, *(len(str(v)) for v in counts.flat), *(min(len(x), 10) for x in labels))
    head = f"| {corner:<{width}} | " + " | ".join(f"{x[:10]:>{cells}}" for x in labels) + " |"
    rows = [head, "|" + "-" * (width + 2) + "|" + "|".join("-" * (cells + 2) for _ in labels) + "|"]
    for label, row in zip(labels, counts):
        rows.append(f"| {label:<{width}} | " + " | ".join(f"{v:>{cells}}" for v in row) + " |")
    return "\n".join(rows)
