"""Atomic output files: permissions from the umask, nothing left behind on failure."""

import json
import os
import stat

import pytest

from maskrcnn.checkpoint import atomic_save
from maskrcnn.evaluation.results import write_json_atomic
from maskrcnn.files import atomic_output


@pytest.fixture
def umask():
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    atomic_save({"a": 1}, tmp_path / "model.pt")
    write_json_atomic({"a": 1}, tmp_path / "results.json")
    for name in ("model.pt", "results.json"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == mode, name


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomic({"old": True}, path)
    with pytest.raises(RuntimeError):
        with atomic_output(path) as temporary:
            temporary.write_text("{half")
            raise RuntimeError("disk full")
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
