"""An ablation table's report: per row our APs (mean and spread over seeds) beside the paper's,
and whether each row's change from the baseline row goes the paper's way.

Pure functions of the recorded numbers (no torch, no training), so that the rules are
tested on given figures:
- spread: the sample standard deviation over the seeds (none with one seed);
- a row's mask AP is compared with the baseline row's: "agrees" when ours and the paper's
  are both higher, or both lower; "disagrees" otherwise; "within noise" when the difference
  of the means is at most the larger of the two rows' spreads (with 2 or more seeds).
"""

import csv
import io
import math
import statistics
from dataclasses import dataclass

from maskrcnn.experiments.tables import PaperFigures, Row, Table

METRICS = ("mask_ap", "mask_ap50", "mask_ap75", "box_ap")  # in percent
HEADINGS = {"mask_ap": "mask AP", "mask_ap50": "AP50", "mask_ap75": "AP75", "box_ap": "box AP"}


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (None with fewer than 2 values) of n values."""

    mean: float
    spread: float | None
    n: int


def summarize(values: list[float | None]) -> Stat | None:
    """The Stat of the finite values (None when there is none)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    spread = statistics.stdev(finite) if len(finite) > 1 else None
    return Stat(statistics.fmean(finite), spread, len(finite))


def row_stats(runs: list[dict]) -> dict[str, Stat | None]:
    """runs: one dict per seed with the METRICS (percent), "seconds" and "iterations" ->
    a Stat for each of those keys."""
    keys = (*METRICS, "seconds", "iterations")
    return {key: summarize([run.get(key) for run in runs]) for key in keys}


def direction(
    row: Stat | None, baseline: Stat | None, paper_row: float | None, paper_baseline: float | None
) -> str:
    """Whether our change from the baseline goes the paper's way, for one metric."""
    if paper_row is None or paper_baseline is None:
        return "n/a (no paper figure)"
    if row is None or baseline is None:
        return "n/a (baseline not run)" if baseline is None else "n/a"
    # compared as the table shows them (one decimal): 0.0 against 0.0 is no difference
    difference = round(row.mean, 1) - round(baseline.mean, 1)
    spreads = [s for s in (row.spread, baseline.spread) if s is not None]
    if spreads and abs(difference) <= max(spreads):
        return "within noise"
    paper_difference = paper_row - paper_baseline
    ours, paper = _word(difference), _word(paper_difference)
    if paper == "equal":
        return f"n/a (paper: equal; ours {ours})"
    if ours == "equal":
        return f"no difference (paper {paper})"
    if ours == paper:
        return f"agrees ({ours})"
    return f"disagrees (ours {ours}, paper {paper})"


def _word(difference: float) -> str:
    return "higher" if difference > 0 else "lower" if difference < 0 else "equal"


def shown(stat: Stat | None, digits: int = 1) -> str:
    """ "31.2 ± 0.8" (mean ± sample standard deviation), "31.2" for one seed, "–" for none."""
    if stat is None:
        return "–"
    if stat.spread is None:
        return f"{stat.mean:.{digits}f}"
    return f"{stat.mean:.{digits}f} ± {stat.spread:.{digits}f}"


def _paper(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def paper_columns(table: Table) -> tuple[str, ...]:
    """The METRICS the paper gives for some row of `table` (mask AP always)."""
    return tuple(
        m
        for m in METRICS
        if m == "mask_ap" or any(r.paper and getattr(r.paper, m) is not None for r in table.rows)
    )


@dataclass(frozen=True)
class RowReport:
    """What the report says of one row: its name, its stats (None when it has no finished
    run), its status ("done", "2 of 3 seeds", "not run", "failed: ...") and the direction."""

    row: Row
    stats: dict[str, Stat | None] | None
    status: str
    versus: str


def build_reports(
    table: Table, rows: tuple[Row, ...], runs: dict[str, list[dict]], seeds: int, failures: dict[str, str]
) -> list[RowReport]:
    """rows: those to report, in the table's order; runs: row name -> its finished runs
    (one dict per seed, see `row_stats`); failures: row name -> the error of its last try."""
    stats = {row.name: row_stats(runs[row.name]) if runs.get(row.name) else None for row in rows}
    baseline_stats = stats.get(table.baseline)
    baseline_paper = table.row(table.baseline).paper
    reports = []
    for row in rows:
        done = len(runs.get(row.name, []))
        if row.name in failures:
            status = f"failed: {failures[row.name]}"
        elif done >= seeds:
            status = "done"
        elif done:
            status = f"{done} of {seeds} seeds"
        else:
            status = "not run"
        if row.name == table.baseline:
            versus = "baseline"
        elif stats[row.name] is None:
            versus = "–"
        else:
            versus = direction(
                stats[row.name]["mask_ap"],
                baseline_stats["mask_ap"] if baseline_stats else None,
                row.paper.mask_ap if row.paper else None,
                baseline_paper.mask_ap if baseline_paper else None,
            )
        reports.append(RowReport(row, stats[row.name], status, versus))
    return reports


def markdown_table(table: Table, reports: list[RowReport], header: list[str]) -> str:
    """table.md: a title, the `header` lines (date, machine, budget, seeds, data), how to read
    the table, and the table in the paper's layout with our figures first."""
    columns = paper_columns(table)
    lines = [f"# Table {table.key}: {table.title}, on the shapes dataset", ""]
    for line in header:
        lines += [line, ""]
    lines.append(
        "Ours: COCO AP (%) on the shapes validation split; with several seeds, mean ± sample standard "
        f'deviation. Paper: Mask R-CNN Table {table.key} (COCO minival, full-size models). "vs baseline": '
        f"whether the row's mask AP is higher or lower than the baseline row's ({table.baseline}) in both; "
        '"within noise" when the difference of the means is at most the larger of the two rows\' '
        "standard deviations."
    )
    lines.append("")
    cells = ["row", *(HEADINGS[m] for m in METRICS), "iterations", "min/run"]
    cells += [f"paper {HEADINGS[m]}" for m in columns] + ["vs baseline", "status"]
    lines.append("| " + " | ".join(cells) + " |")
    lines.append("|" + "|".join("---" for _ in cells) + "|")
    for report in reports:
        stats = report.stats or {}
        minutes = stats.get("seconds")
        minutes = Stat(minutes.mean / 60, None, minutes.n) if minutes else None
        iterations = stats.get("iterations")
        iterations = Stat(iterations.mean, None, iterations.n) if iterations else None
        paper = report.row.paper or PaperFigures(None)
        row = [report.row.name, *(shown(stats.get(m)) for m in METRICS), shown(iterations, 0), shown(minutes)]
        row += [_paper(getattr(paper, m)) for m in columns] + [report.versus, report.status]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines) + "\n"


def csv_table(table: Table, reports: list[RowReport]) -> str:
    """table.csv: one line per row; means and sample standard deviations (empty when not
    known), the paper's figures, the direction and the status."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["table", "row", "baseline", "status", "seeds"]
    for metric in METRICS:
        header += [metric, f"{metric}_sd"]
    header += ["iterations", "minutes_per_run", *(f"paper_{m}" for m in METRICS), "vs_baseline"]
    writer.writerow(header)
    for report in reports:
        stats = report.stats or {}
        n = max((s.n for s in stats.values() if s is not None), default=0)
        line = [table.key, report.row.name, report.row.name == table.baseline, report.status, n]
        for metric in METRICS:
            stat = stats.get(metric)
            line += [_number(stat.mean if stat else None), _number(stat.spread if stat else None)]
        seconds, iterations = stats.get("seconds"), stats.get("iterations")
        line += [
            _number(iterations.mean if iterations else None, 0),
            _number(seconds.mean / 60 if seconds else None),
        ]
        paper = report.row.paper or PaperFigures(None)
        line += [_number(getattr(paper, m), 1) for m in METRICS] + [report.versus]
        writer.writerow(line)
    return buffer.getvalue()


def _number(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"
