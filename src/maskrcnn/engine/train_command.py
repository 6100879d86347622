"""`maskrcnn train` and `maskrcnn make-shapes`."""

import sys

from maskrcnn.config import ConfigError, load_config
from maskrcnn.interop.state_dicts import CheckpointError


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
    resume: bool = False,
    overwrite: bool = False,
    skip_bad_images: bool = False,
) -> int:
    """Train from a YAML config; flags are shorthands for the matching key=value overrides."""
    from maskrcnn.engine.trainer import NonFiniteLossError, train

    flag_overrides = {
        "data.train_json": train_json,
        "data.train_images": train_images,
        "data.val_json": val_json,
        "data.val_images": val_images,
        "output_dir": out,
        "solver.max_iter": max_iter,
        "data.skip_bad_images": True if skip_bad_images else None,
    }
    val_given = val_json is not None or any(o.startswith("data.val_json=") for o in overrides)
    if train_json is not None and not val_given:
        # The config's validation split belongs to the config's own data, not to this one.
        flag_overrides.update({"data.val_json": "''", "data.val_images": "''"})
    overrides = list(overrides) + [f"{k}={v}" for k, v in flag_overrides.items() if v is not None]
    try:
        config = load_config(config_path, overrides)
        if train_json is not None and not config.data.val_json:
            print("no --val-json: training without a validation split (no AP is computed)")
        if not config.data.train_json or not config.data.train_images:
            raise ConfigError("no training data: give --train-json and --train-images")
        train(config, resume=resume, overwrite=overwrite)
    except (ConfigError, CheckpointError, FileNotFoundError, ValueError, NonFiniteLossError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def make_shapes_command(out: str, train: int, val: int, seed: int) -> int:
    from maskrcnn.data.shapes import make_shapes

    make_shapes(out, train, val, seed)
    print(f"shapes dataset: {train} training and {val} validation images in {out}")
    return 0
