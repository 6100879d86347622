"""The microscopy tools' metric: TP / (TP + FP + FN) at IoU thresholds 0.5 to 0.9.

StarDist calls it "accuracy" (`stardist.matching`), Cellpose "average_precision"
(`cellpose.metrics`), the 2018 Data Science Bowl scored each image by its mean over the
thresholds. A detection (score >= the threshold) matches an object of its own class one to
one when their mask IoU reaches the IoU threshold; unmatched detections are false positives
(but for those on a crowd region), unmatched objects false negatives.
"""

import numpy as np

from maskrcnn.evaluation.matching import ImageOverlaps, greedy_pairs

IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(9))  # 0.5, 0.55, ..., 0.9


def image_counts(image: ImageOverlaps, threshold: float) -> tuple[int, int, int]:
    """(TP, FP, FN) of one image at one IoU threshold."""
    same_class = image.predicted_labels[:, None] == image.true_labels[None, :]
    pairs = greedy_pairs(np.where(same_class, image.ious, 0.0), threshold)
    matched = {d for d, _ in pairs}
    ignored = sum(
        1 for d in range(len(image.predicted_labels)) if d not in matched and image.crowd[d] >= threshold
    )
    tp = len(pairs)
    return tp, len(image.predicted_labels) - tp - ignored, len(image.true_labels) - tp


def accuracy_report(
    overlaps: list[ImageOverlaps], file_names: dict[int, str], score_threshold: float
) -> dict:
    """The metric per image and threshold, its mean over the images at each threshold, the
    Data Science Bowl's score (that mean averaged over the thresholds), and the counts summed
    over the images. An image with no object and no detection has no value (null) and is left
    out of the means: there was nothing to get right or wrong."""
    counts = np.array([[image_counts(image, t) for t in IOU_THRESHOLDS] for image in overlaps]).reshape(
        len(overlaps), len(IOU_THRESHOLDS), 3
    )
    denominators = counts.sum(axis=2)
    values = np.divide(
        counts[:, :, 0], denominators, out=np.full(denominators.shape, np.nan), where=denominators > 0
    )
    valued = ~np.isnan(values)
    present = valued.sum(axis=0)
    mean = np.divide(
        np.where(valued, values, 0.0).sum(axis=0),
        present,
        out=np.full(present.shape, np.nan),
        where=present > 0,
    )
    totals = counts.sum(axis=0)
    return {
        "name": "accuracy = TP / (TP + FP + FN) (StarDist: accuracy; Cellpose: average_precision)",
        "score_threshold": score_threshold,
        "iou_thresholds": list(IOU_THRESHOLDS),
        "mean": [float(v) for v in mean],
        "dsb_score": float(np.mean(mean)),
        "images": int(valued.any(axis=1).sum()),
        "tp": totals[:, 0].tolist(),
        "fp": totals[:, 1].tolist(),
        "fn": totals[:, 2].tolist(),
        "per_image": [
            {
                "image_id": image.image_id,
                "file_name": file_names.get(image.image_id, ""),
                "accuracy": [None if np.isnan(v) else float(v) for v in row],
            }
            for image, row in zip(overlaps, values)
        ],
    }


def format_accuracy(report: dict) -> str:
    """The thresholds' mean accuracy and summed counts as a table, and the mean over them."""
    lines = [
        f"accuracy TP/(TP+FP+FN), mean over {report['images']} images "
        f"(detections with score >= {report['score_threshold']:g})",
        "|  IoU | accuracy |      TP |      FP |      FN |",
        "|------|----------|---------|---------|---------|",
    ]
    for t, value, tp, fp, fn in zip(
        report["iou_thresholds"], report["mean"], report["tp"], report["fp"], report["fn"]
    ):
        shown = "     n/a" if np.isnan(value) else f"{value:8.3f}"
        lines.append(f"| {t:4.2f} | {shown} | {tp:7d} | {fp:7d} | {fn:7d} |")
    lines.append(f"mean over IoU 0.5 to 0.9 (the 2018 Data Science Bowl's score): {report['dsb_score']:.3f}")
    return "\n".join(lines)
