"""Training logs: metrics.jsonl, TensorBoard when installed, and the loss-curve plot."""

import json
from pathlib import Path

from maskrcnn.files import atomic_output, strict_json, write_text_atomic


class MetricsLog:
    """Appends one JSON object per logged step to `metrics.jsonl` (and TensorBoard if present).

    start_iteration: the iteration a resumed run continues from. What an earlier run logged
    past it is dropped, from metrics.jsonl (rewritten atomically) and from TensorBoard (its
    purge step), so a resumed run's logs read like one uninterrupted run.
    """

    def __init__(self, output_dir: Path, enabled: bool = True, start_iteration: int = 0):
        self.path = output_dir / "metrics.jsonl"
        self.enabled = enabled
        self.tensorboard = None
        if not enabled:
            return
        if start_iteration > 0 and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("iteration", 0) <= start_iteration]
            write_text_atomic("".join(strict_json(r) + "\n" for r in kept), self.path)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # TensorBoard is optional
            return
        # TensorBoard hides the events from purge_step on that an earlier writer left.
        purge_step = start_iteration + 1 if start_iteration > 0 else None
        self.tensorboard = SummaryWriter(str(output_dir / "tensorboard"), purge_step=purge_step)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as stream:
            stream.write(strict_json(record) + "\n")
        if self.tensorboard is not None:
            for key, value in record.items():
                if key != "iteration" and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(key, value, record["iteration"])

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def read_metrics(path: Path) -> list[dict]:
    with open(path) as stream:
        return [json.loads(line) for line in stream if line.strip()]


def plot_losses(metrics_path: Path, output_path: Path) -> None:
    """One curve per loss term and the total against the iteration, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in read_metrics(metrics_path) if "loss" in r]
    if not records:
        return
    names = sorted({k for r in records for k in r if k.startswith("loss")})
    figure, axes = plt.subplots(figsize=(8, 5))
    for name in names:
        points = [(r["iteration"], r[name]) for r in records if name in r]
        axes.plot(*zip(*points), label=name, linewidth=2.0 if name == "loss" else 1.0)
    axes.set_xlabel("iteration")
    axes.set_ylabel("loss")
    axes.set_yscale("log")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    with atomic_output(output_path) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    plt.close(figure)
