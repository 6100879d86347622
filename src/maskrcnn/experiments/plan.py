"""An ablation's plan (`maskrcnn ablate TABLE`): what it is given, checked before any work; the
runs are `experiments.runs`'.

Every row's config is loaded (and so checked) here, before torch is imported, so that a
misspelt override or a row the config cannot express fails at once and not after the
first rows have trained. An output folder that holds this table's runs is continued when
its recorded settings are the command's; other settings are refused unless --overwrite.
"""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from maskrcnn.builtin_configs import resolve_config
from maskrcnn.config import FLAG_KEYS, ConfigError, load_config
from maskrcnn.data.shapes import shapes_dataset_paths
from maskrcnn.errors import OptionError, one_line, shown
from maskrcnn.experiments.tables import Row, Table, get_table, row_overrides, select_rows
from maskrcnn.path_checks import output_folder

STATE_FILE = "ablation.json"  # the settings and every finished run's figures
DEFAULT_BUDGET_MINUTES = 10.0
# Keys each run's settings own: an override of one would be silently replaced.
OWNED_KEYS = {
    **{FLAG_KEYS[flag]: flag for flag in ("--max-iter", "--budget-minutes", "--out", "--device")},
    "seed": "--seeds",
    **{
        FLAG_KEYS[flag]: "--data" for flag in ("--train-json", "--train-images", "--val-json", "--val-images")
    },  # noqa: E501
}


@dataclass
class Plan:
    """An ablation as checked: the table and rows to run, where, and the settings every run shares.

    settings: what the results depend on, recorded in the state file and compared on a rerun
    (table, config, overrides, data, seeds, budget_minutes, max_iter).
    """

    table: Table
    rows: tuple[Row, ...]
    out: Path
    data: Path
    config: str
    overrides: list[str]
    seeds: int
    budget_minutes: float | None
    max_iter: int | None
    device: str
    settings: dict
    earlier: dict = field(default_factory=dict)  # the state file's runs and failures (empty: none)
    fresh: bool = False  # --overwrite: every run starts again, whatever its folder holds

    def run_overrides(self, row: Row | None, seed: int) -> list[str]:
        """Everything one run of `row` with `seed` trains with, in load_config's order (row
        None: the overrides every row shares)."""
        paths = shapes_dataset_paths(self.data)
        # A length in iterations scales the config's schedule (`load_run_config`), which a
        # solver.max_iter override would not.
        length = [f"solver.budget_minutes={self.budget_minutes}"] if self.budget_minutes is not None else []
        fixed = [
            f"data.train_json={json.dumps(str(paths['train_annotations']))}",
            f"data.train_images={json.dumps(str(paths['train_images']))}",
            f"data.val_json={json.dumps(str(paths['val_annotations']))}",
            f"data.val_images={json.dumps(str(paths['val_images']))}",
            f"output_dir={json.dumps(str(self.run_dir(row, seed) if row else self.out))}",
            f"seed={seed}",
            f"device={self.device}",
            *length,
        ]
        return row_overrides(row, [*self.overrides, *fixed]) if row else [*self.overrides, *fixed]

    def load_run_config(self, row: Row, seed: int):
        """The TrainConfig of one run: the config, the overrides and the run's length."""
        config = load_config(self.config, self.run_overrides(row, seed))
        if self.max_iter is not None:
            config = dataclasses.replace(config, solver=config.solver.scaled_to(self.max_iter))
        return config

    def run_dir(self, row: Row, seed: int) -> Path:
        return self.out / row.name / f"seed{seed}"


def check_ablation(
    table_key: str,
    overrides: list[str],
    row_names: list[str] | None,
    out: str | None,
    data: str,
    config: str,
    budget_minutes: float | None,
    max_iter: int | None,
    seeds: int,
    device: str,
    overwrite: bool,
) -> Plan:
    """The Plan, or ConfigError/OptionError naming the option, the row or the config key."""
    table = get_table(table_key)
    rows = select_rows(table, row_names)
    if budget_minutes is not None and max_iter is not None:
        raise OptionError(
            "--budget-minutes and --max-iter both set the length of each run: drop one "
            "(under a budget the iterations follow the measured step time)"
        )
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key in OWNED_KEYS:
            raise OptionError(f"{item}: ablate sets {key} for each run; use {OWNED_KEYS[key]}")
    if max_iter is None and budget_minutes is None:
        budget_minutes = DEFAULT_BUDGET_MINUTES
    config_path = resolve_config(config, "--config")
    out_dir = Path(out if out is not None else f"runs/ablate-{table.key}")
    output_folder("--out", str(out_dir))
    output_folder("--data", data)
    plan = Plan(
        table,
        rows,
        out_dir,
        Path(data),
        config_path,
        overrides,
        seeds,
        budget_minutes,
        max_iter,
        device,
        settings={
            "table": table.key,
            # Resolved: the same file or folder named another way is the same setting.
            "config": str(Path(config_path).resolve()),
            "overrides": overrides,
            "data": str(Path(data).resolve()),
            "seeds": seeds,
            "budget_minutes": budget_minutes,
            "max_iter": max_iter,
        },
    )
    load_config(config_path, plan.run_overrides(None, 0))  # the command's own overrides, named alone
    for row in rows:  # every row's config, before the first one trains
        try:
            load_config(config_path, plan.run_overrides(row, 0))
        except ConfigError as error:
            raise ConfigError(f"table {table.key} row {row.name}: {one_line(error)}") from None
    plan.earlier = {} if overwrite else _earlier_state(plan)
    plan.fresh = overwrite
    return plan


# How each setting is named when a rerun's differs from the recorded one.
SETTING_OPTIONS = {
    "table": "TABLE",
    "config": "--config",
    "overrides": "KEY=VALUE",
    "data": "--data",
    "seeds": "--seeds",
    "budget_minutes": "--budget-minutes",
    "max_iter": "--max-iter",
}


def _earlier_state(plan: Plan) -> dict:
    """The state file of an earlier run of the same ablation in --out (empty when there is
    none); OptionError when its settings differ from the plan's."""
    path = plan.out / STATE_FILE
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text())
        recorded = state["settings"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise OptionError(
            f"{path}: not an ablation state file ({one_line(error)}); use --overwrite"
        ) from None
    differences = [
        f"{SETTING_OPTIONS[key]} {_setting(recorded.get(key))}, not {_setting(value)}"
        for key, value in plan.settings.items()
        if _comparable(key, recorded.get(key)) != _comparable(key, value)
    ]
    if differences:
        raise OptionError(
            f"{shown('--out', plan.out)}: holds an ablation run with {'; '.join(differences)}: rerun with "
            "those settings to continue it, or give --overwrite to start again (or choose another --out)"
        )
    return state


def _comparable(key: str, value):
    # Overrides may come before or after the options, in any order; their order matters only
    # for a key given twice with two values, which this comparison does not tell apart.
    return sorted(value) if key == "overrides" and isinstance(value, list) else value


def _setting(value) -> str:
    if value is None:
        return "unset"
    if isinstance(value, list):
        return " ".join(value) if value else "none"
    return str(value)
