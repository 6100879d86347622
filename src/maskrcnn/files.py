"""Writing output files atomically, with the permissions the user's umask gives."""

import contextlib
import json
import math
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path` to write to; when the block ends without an
    error the file is flushed to disk and renamed over `path`, otherwise it is removed.

    Readers never see a half-written file, and a crash leaves the previous one intact.
    The file is created with mode 0o666 less the umask, as `open` does (mkstemp's private
    0o600 would keep a checkpoint from the rest of a team on a shared cluster).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield temporary
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    """Replace `path` by a file holding `text` (UTF-8), atomically."""
    with atomic_output(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def strict_json(value, indent: int | None = None) -> str:
    """json.dumps that writes NaN and infinities as null: strict JSON, which every reader
    (JavaScript, jq, pandas' strict mode) accepts, where Python would write `NaN`."""
    return json.dumps(_finite(value), indent=indent, allow_nan=False)


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def picture_names(images: list) -> list[str]:
    """<stem>.png per image path, in order; repeated stems (a.jpg and a.png, cam1/0001.jpg and
    cam2/0001.jpg) get -2, -3, ... so that no picture overwrites another, on case-insensitive
    file systems too."""
    used, names = set(), []
    for image in images:
        stem = Path(image).stem
        name, n = f"{stem}.png", 1
        while name.lower() in used:
            n += 1
            name = f"{stem}-{n}.png"
        used.add(name.lower())
        names.append(name)
    return names
