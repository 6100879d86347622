"""The paths of `maskrcnn train` and the weights of the other commands, checked before torch
is imported (`path_checks` holds the checks of one path each)."""

from pathlib import Path

from maskrcnn.config import FLAG_KEYS
from maskrcnn.errors import OptionError
from maskrcnn.path_checks import config_origin, existing_file, existing_folder, output_folder


def check_training_paths(config, config_path: str | None, overrides, flags: dict[str, str | None]) -> None:
    """The paths a training run reads and writes, before anything is built or read (a missing
    image folder would otherwise first be noticed by a DataLoader worker, mid-set-up).

    config: the TrainConfig; overrides: the user's key=value overrides; flags: the path options
    as given (None: not given), so that a message names `--train-images` when that was given
    and `data.train_images=... (from configs/x.yaml)` when the value came from the config.
    """

    def named(flag: str) -> tuple[str, str]:
        key = FLAG_KEYS[flag]
        return (
            (flag, "") if flags.get(flag) is not None else (key, config_origin(key, config_path, overrides))
        )

    def value(flag: str) -> str:
        section, _, name = FLAG_KEYS[flag].rpartition(".")
        return getattr(getattr(config, section) if section else config, name)

    option, origin = named("--train-json")
    existing_file(option, value("--train-json"), origin)
    option, origin = named("--train-images")
    existing_folder(option, value("--train-images"), origin)
    if value("--val-json"):
        option, origin = named("--val-json")
        existing_file(option, value("--val-json"), origin)
        if value("--val-images"):
            option, origin = named("--val-images")
            existing_folder(option, value("--val-images"), origin)
    if config.init_weights:
        existing_file(
            "init_weights", config.init_weights, config_origin("init_weights", config_path, overrides)
        )
    option, origin = named("--out")
    output_folder(option, value("--out"), origin)


def check_weights(path: str) -> None:
    """That the weights file is there, before torch is loaded; what is wrong inside a file the
    loader says, naming it."""
    if not path:
        raise OptionError("--weights '': expected a weights file")
    if Path(path).is_dir():
        raise OptionError(f"--weights {path}: is a directory, not a weights file")
    if not Path(path).is_file():
        raise OptionError(f"--weights {path}: weights file not found")
