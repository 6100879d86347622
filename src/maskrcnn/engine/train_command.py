"""`maskrcnn train`."""

import dataclasses
import json
import sys

from maskrcnn.config import ConfigError, load_config
from maskrcnn.input_checks import OptionError, check_training_paths, one_line


def train_command(
    config_path: str,
    overrides: list[str],
    *,
    train_json: str | None = None,
    train_images: str | None = None,
    val_json: str | None = None,
    val_images: str | None = None,
    out: str | None = None,
    max_iter: int | None = None,
    budget_minutes: float | None = None,
    resume: bool = False,
    overwrite: bool = False,
    skip_bad_images: bool = False,
) -> int:
    """Train from a YAML config; flags are shorthands for the matching key=value overrides.

    Everything is checked before torch is imported, so that a wrong value or path is
    answered at once.
    """
    flag_overrides = {
        "data.train_json": train_json,
        "data.train_images": train_images,
        "data.val_json": val_json,
        "data.val_images": val_images,
        "output_dir": out,
        "solver.budget_minutes": budget_minutes,
        "data.skip_bad_images": True if skip_bad_images else None,
    }
    val_given = val_json is not None or any(o.startswith("data.val_json=") for o in overrides)
    if train_json is not None and not val_given:
        # The config's validation split belongs to the config's own data, not to this one.
        flag_overrides.update({"data.val_json": "", "data.val_images": ""})
    user_overrides = list(overrides)
    # JSON-quoted, so that a path such as `--out 2024` or `--out yes` stays a string (YAML reads JSON).
    overrides = user_overrides + [f"{k}={json.dumps(v)}" for k, v in flag_overrides.items() if v is not None]
    path_flags = {"--train-json": train_json, "--train-images": train_images, "--out": out}
    path_flags.update({"--val-json": val_json, "--val-images": val_images})
    try:
        _check_one_run_length(user_overrides, max_iter, budget_minutes)
        config = load_config(config_path, overrides)
        if max_iter is not None:  # the config's schedule, fitted to this length
            config = dataclasses.replace(config, solver=config.solver.scaled_to(max_iter))
        if not config.data.train_json or not config.data.train_images:
            raise ConfigError("no training data: give --train-json and --train-images")
        check_training_paths(config, config_path, user_overrides, path_flags)
    except (ConfigError, OptionError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    if train_json is not None and not config.data.val_json:
        print("no --val-json: training without a validation split (no AP is computed)")
    from maskrcnn.engine.trainer import NonFiniteLossError, train
    from maskrcnn.interop.state_dicts import CheckpointError

    try:
        train(config, resume=resume, overwrite=overwrite)
    except (
        ConfigError,
        OptionError,
        CheckpointError,
        FileNotFoundError,
        ValueError,
        NonFiniteLossError,
    ) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    return 0


def _check_one_run_length(overrides: list[str], max_iter: int | None, budget_minutes: float | None) -> None:
    """A budget fits the number of iterations; an iteration count given beside it on the
    command line would be silently ignored, so the two are refused together."""
    iterations = max_iter is not None or any(o.startswith("solver.max_iter=") for o in overrides)
    budget = budget_minutes is not None or any(o.startswith("solver.budget_minutes=") for o in overrides)
    if iterations and budget:
        given = "--max-iter" if max_iter is not None else "solver.max_iter="
        raise ConfigError(
            f"--budget-minutes and {given} both set the length of the run: drop one "
            "(under a budget the iterations follow the measured step time)"
        )
