"""The files a command wrote into its output folder, so that its next run there replaces them.

`maskrcnn predict --out DIR` and `maskrcnn eval --out DIR` each keep a manifest in DIR
(`predict_files.json`, `eval_files.json`: the paths, relative to DIR, of the files the run
wrote). A later run of the same command into DIR removes the files the earlier one listed and
this one did not write again (the overlay of an image no longer among the inputs, vis/
pictures beyond this run's `--vis N`), so the folder holds one run's outputs and nothing stale.
Only listed files are ever removed: whatever else is in the folder is the user's and stays,
and so do the run's own inputs (`eval --results DIR/results.json --out DIR`).

An interrupted run must not leave files that no manifest names, so `begin` lists the earlier
run's files together with every file this run may write before it writes any; `finish` then
removes what is stale and lists what was written.
"""

import contextlib
import json
from collections.abc import Iterable
from pathlib import Path

from maskrcnn.evaluation.results import write_json_atomic

MANIFEST_SUFFIX = "_files.json"


class OutputManifest:
    """The manifest of one command's outputs in `folder`.

    command: "predict" or "eval", the manifest's name. owned: the names (relative to `folder`)
    this command writes, as a function of a relative path, so that a damaged or hand-edited
    manifest can never make it remove anything else (a path outside the folder, a user file).
    """

    def __init__(self, folder: str | Path, command: str, owned, keep: Iterable[str | Path] = ()):
        self.folder = Path(folder)
        self.path = self.folder / f"{command}{MANIFEST_SUFFIX}"
        self.owned = owned
        # The run's inputs are never removed, even when an earlier run wrote them.
        self.keep = {_identity(Path(p)) for p in keep}
        self.previous = self._read()

    def begin(self, planned: Iterable[Path]) -> None:
        """Before writing: list the earlier run's files and all those this run may write."""
        names = sorted(self.previous | {self._relative(p) for p in planned})
        write_json_atomic({"files": names}, self.path, indent=1)

    def finish(self, written: Iterable[Path]) -> list[Path]:
        """After writing: remove the earlier run's files that this run did not write again,
        list the ones it wrote; returns the removed paths."""
        current = {self._relative(p) for p in written}
        removed = []
        for name in sorted(self.previous - current):
            path = self.folder / name
            if path.is_file() and _identity(path) not in self.keep:
                path.unlink()
                removed.append(path)
        for parent in sorted({p.parent for p in removed} - {self.folder}, reverse=True):
            with contextlib.suppress(OSError):  # not empty: something else is in it
                parent.rmdir()
        write_json_atomic({"files": sorted(current)}, self.path, indent=1)
        return removed

    def _read(self) -> set[str]:
        try:
            data = json.loads(self.path.read_text())
            names = data["files"]
        except (OSError, ValueError, KeyError, TypeError):  # none yet, or not one of ours
            return set()
        if not isinstance(names, list):
            return set()
        return {n for n in names if isinstance(n, str) and _inside(n) and self.owned(n)}

    def _relative(self, path: Path) -> str:
        return Path(path).relative_to(self.folder).as_posix()


def _inside(name: str) -> bool:
    """A plain relative path that stays in the folder (no "..", not absolute)."""
    path = Path(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts


def _identity(path: Path) -> str:
    return str(path.resolve())
