"""loss_curves.png: the training losses, and the validation loss and AP of the evaluations."""

from pathlib import Path

import numpy as np

from maskrcnn.engine.metrics import read_metrics
from maskrcnn.files import atomic_output

CURVES_FILE = "loss_curves.png"
# The evaluations' APs drawn in the second panel (the ones a run reports in its summary line).
AP_CURVES = {"bbox_AP": "box AP", "segm_AP": "mask AP", "keypoints_AP": "keypoint AP"}


def smoothed(values: np.ndarray, weight: float = 0.0) -> np.ndarray:
    """An exponential moving average corrected for its start (TensorBoard's smoothing);
    weight 0 leaves the values alone, and the default picks one from the length: about a
    twentieth of the curve is averaged."""
    if len(values) == 0:
        return values
    if weight == 0.0:
        weight = min(0.95, max(0.0, 1.0 - 20.0 / len(values)))
    out = np.empty(len(values), dtype=np.float64)
    average, norm = 0.0, 0.0
    for index, value in enumerate(values):
        average = weight * average + (1 - weight) * value
        norm = weight * norm + (1 - weight)
        out[index] = average / norm
    return out


def plot_curves(metrics_path: Path, output_path: Path) -> None:
    """Panel 1: each training loss term and their sum against the iteration, smoothed, the raw
    values faint behind. Panel 2 (when the run evaluated during training): the validation loss
    (left axis) and the APs in percent (right axis) at each evaluation. Nothing is written
    when no step was logged."""
    if not metrics_path.exists():
        return
    records = read_metrics(metrics_path)
    training = [r for r in records if "loss" in r]
    evaluations = [r for r in records if any(k in r for k in (*AP_CURVES, "val_loss"))]
    if not training:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if evaluations else 1
    figure, axes = plt.subplots(panels, 1, figsize=(8, 4.5 * panels), squeeze=False)
    _training_panel(axes[0][0], training)
    if evaluations:
        _evaluation_panel(axes[1][0], evaluations)
    figure.tight_layout()
    with atomic_output(output_path) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    plt.close(figure)


def _training_panel(axis, records: list[dict]) -> None:
    names = sorted({k for r in records for k in r if k.startswith("loss")})
    for name in names:
        points = np.array([(r["iteration"], r[name]) for r in records if name in r], dtype=np.float64)
        (line,) = axis.plot(
            points[:, 0], smoothed(points[:, 1]), label=name, linewidth=2.0 if name == "loss" else 1.2
        )
        axis.plot(points[:, 0], points[:, 1], color=line.get_color(), alpha=0.2, linewidth=0.8)
    axis.set_title("training losses (smoothed; raw values faint)")
    axis.set_xlabel("iteration")
    axis.set_ylabel("loss")
    axis.set_yscale("log")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)


def _evaluation_panel(axis, records: list[dict]) -> None:
    lines = []
    losses = [(r["iteration"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
    if losses:
        lines += axis.plot(*zip(*losses), "o-", color="black", label="validation loss")
    axis.set_xlabel("iteration")
    axis.set_ylabel("validation loss")
    axis.grid(True, alpha=0.3)
    ap_axis = axis.twinx()
    for key, label in AP_CURVES.items():
        points = [(r["iteration"], 100 * r[key]) for r in records if r.get(key) is not None]
        if points:
            lines += ap_axis.plot(*zip(*points), "s--", label=label)
    ap_axis.set_ylabel("AP (%)")
    axis.set_title("evaluations of the validation split")
    axis.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="center right")
