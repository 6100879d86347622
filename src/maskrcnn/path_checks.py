"""Paths a user gives, checked before any work, each problem one line (`errors.OptionError`):
all of it before a model is built or a dataset read, so that a typo costs no time. Free of
torch."""

import os
from pathlib import Path

from maskrcnn.errors import OptionError, shown


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
