"""Training logs: metrics.jsonl, results.csv, TensorBoard when installed."""

import csv
import io
import json
import math
from pathlib import Path

from maskrcnn.files import strict_json, write_text_atomic

RESULTS_FILE = "results.csv"


class MetricsLog:
    """Appends one JSON object per logged step and per evaluation to `metrics.jsonl`, the
    same as a row of `results.csv` (`ResultsTable`), and to TensorBoard if present.

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
        kept = []
        if start_iteration > 0 and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("iteration", 0) <= start_iteration]
            write_text_atomic("".join(strict_json(r) + "\n" for r in kept), self.path)
        self.table = ResultsTable(output_dir / RESULTS_FILE, kept)
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
        self.table.add(record, self.path)
        if self.tensorboard is not None:
            for key, value in record.items():
                if key != "iteration" and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(key, value, record["iteration"])

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


class ResultsTable:
    """results.csv: one row per record of metrics.jsonl (a log period's losses, learning rate
    and times; an evaluation's validation loss and APs), one column per figure, an empty cell
    where a row has no such figure: for a spreadsheet.

    Rows are appended as they come; a record with a figure the header lacks (the first
    evaluation's) rewrites the file, atomically, from metrics.jsonl with the wider header.
    """

    def __init__(self, path: Path, records: list[dict]):
        self.path = path
        self.columns: list[str] = []
        self._rewrite(records)

    def add(self, record: dict, metrics_path: Path) -> None:
        if any(key not in self.columns for key in _figures(record)):
            self._rewrite(read_metrics(metrics_path))
            return
        with open(self.path, "a", newline="") as stream:
            csv.writer(stream).writerow(self._row(record))

    def _rewrite(self, records: list[dict]) -> None:
        for record in records:
            self.columns += [key for key in _figures(record) if key not in self.columns]
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(self.columns)
        writer.writerows(self._row(r) for r in records)
        write_text_atomic(text.getvalue(), self.path)

    def _row(self, record: dict) -> list:
        return [_cell(record.get(key)) for key in self.columns]


def _figures(record: dict) -> list[str]:
    return [key for key, value in record.items() if value is None or isinstance(value, (int, float, str))]


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def read_metrics(path: Path) -> list[dict]:
    with open(path) as stream:
        return [json.loads(line) for line in stream if line.strip()]
