"""What a command is given, checked before any work: paths and their one-line errors.

A value that cannot be used fails with one `OptionError` whose message is one line,
"<option> <value>: <problem>", naming the option as the command line spells it (`--out`,
`--train-images`), or the config key and where its value came from when the value came from
a config (`data.train_images=... (from configs/shapes.yaml)`). The commands print it as
`error: <message>` and exit with code 2; all of this happens before a model is built or a
dataset read, so that a typo costs no time.

Free of torch and of the command line's parser: the engine's commands check their paths
with these, and `cli_checks` builds argparse's value checks on them.
"""

import os
import shlex
from pathlib import Path


class OptionError(Exception):
    """A command-line value (or a path from a config) that cannot be used; one line.

    Not a ValueError: argparse takes a ValueError from a `type=` callable for its own kind of
    failure and prints a usage message with a message of its own instead of this one."""


def shown(option: str, value, origin: str = "") -> str:
    """An option and its value as the user gave them: `--out 'my runs'` for a command-line
    option (quoted as a shell would take it back), `data.train_images=x (from a.yaml)` for a
    config key, with where its value came from."""
    if option.startswith("-") or not option.islower():  # --out, or a metavar such as OUT.onnx
        return f"{option} {shlex.quote(str(value))}"
    return f"{option}={shlex.quote(str(value))}" + (f" (from {origin})" if origin else "")


def config_origin(key: str, config_path: str | None, overrides) -> str:
    """Where a config key's value came from: the command line (a key=value override) or the file."""
    if any(item.partition("=")[0].strip() == key for item in overrides):
        return "the command line"
    return str(config_path or "")


def existing_file(option: str, path: str, origin: str = "") -> Path:
    """`path` as a file to read: it must exist and not be a folder."""
    if not path:
        raise OptionError(f"{shown(option, path, origin)}: expected a file path")
    file = Path(path)
    if file.is_dir():
        raise OptionError(f"{shown(option, path, origin)}: is a folder, not a file")
    if not file.is_file():
        raise OptionError(f"{shown(option, path, origin)}: no such file")
    return file


def existing_folder(option: str, path: str, origin: str = "") -> Path:
    """`path` as a folder to read: it must exist and be a folder."""
    if not path:
        raise OptionError(f"{shown(option, path, origin)}: expected a folder path")
    folder = Path(path)
    if folder.is_file():
        raise OptionError(f"{shown(option, path, origin)}: is a file, not a folder")
    if not folder.is_dir():
        raise OptionError(f"{shown(option, path, origin)}: no such folder")
    return folder


def existing_path(option: str, path: str, origin: str = "") -> Path:
    """A file or a folder that exists (predict's IMAGE_OR_DIR)."""
    if not path or not Path(path).exists():
        raise OptionError(f"{shown(option, path, origin)}: no such file or folder")
    return Path(path)


def output_folder(option: str, path: str, origin: str = "") -> Path:
    """`path` as a folder to write in: an existing folder, or one that can be created."""
    if not path:
        raise OptionError(f"{shown(option, path, origin)}: expected a folder path")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OptionError(f"{shown(option, path, origin)}: is a file; expected a folder (created if missing)")
    _writable_place(shown(option, path, origin), folder)
    return folder


def output_file(option: str, path: str, origin: str = "") -> Path:
    """`path` as a file to write: not a folder, in a folder that exists or can be created."""
    if not path:
        raise OptionError(f"{shown(option, path, origin)}: expected a file path")
    file = Path(path)
    if file.is_dir():
        raise OptionError(f"{shown(option, path, origin)}: is a folder; expected the file to write")
    _writable_place(shown(option, path, origin), file.parent)
    return file


def _writable_place(given: str, folder: Path) -> None:
    """The nearest existing folder of `folder` (itself or an ancestor) must be a writable folder,
    else mkdir or the first write would fail after the work is done."""
    for candidate in (folder, *folder.parents):
        try:
            if not candidate.exists():
                continue
        except OSError as error:  # e.g. a path component we may not look into
            raise OptionError(f"{given}: cannot look into {candidate} ({error.strerror})") from None
        if not candidate.is_dir():
            raise OptionError(f"{given}: {candidate} is a file, so no folder can be made in it")
        if not os.access(candidate, os.W_OK | os.X_OK):
            raise OptionError(f"{given}: cannot write in {candidate} (permission denied)")
        return


def one_line(error: BaseException) -> str:
    """An error's message as one line. A DataLoader worker's error arrives with the worker's
    traceback in its message ("Caught ValueError in DataLoader worker process 0. Original
    Traceback ..."): its last line is the original message."""
    message = str(error)
    if "Original Traceback" in message:
        last = [line for line in message.splitlines() if line.strip()][-1]
        kind, sep, rest = last.partition(": ")
        message = rest if sep and kind.replace(".", "_").isidentifier() else last
    return " ".join(message.split())


# `maskrcnn train`'s path options and the config keys they set.
TRAIN_PATH_FLAGS = {
    "--train-json": "data.train_json",
    "--train-images": "data.train_images",
    "--val-json": "data.val_json",
    "--val-images": "data.val_images",
    "--out": "output_dir",
}


def check_training_paths(config, config_path: str | None, overrides, flags: dict[str, str | None]) -> None:
    """The paths a training run reads and writes, before anything is built or read (a missing
    image folder would otherwise first be noticed by a DataLoader worker, mid-set-up).

    config: the TrainConfig; overrides: the user's key=value overrides; flags: the path options
    as given (None: not given), so that a message names `--train-images` when that was given
    and `data.train_images=... (from configs/x.yaml)` when the value came from the config.
    """

    def named(flag: str) -> tuple[str, str]:
        key = TRAIN_PATH_FLAGS[flag]
        return (
            (flag, "") if flags.get(flag) is not None else (key, config_origin(key, config_path, overrides))
        )

    def value(flag: str) -> str:
        section, _, name = TRAIN_PATH_FLAGS[flag].rpartition(".")
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
