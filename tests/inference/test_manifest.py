"""The output manifest: a rerun into a folder replaces the earlier run's files, and only those."""

import json

from maskrcnn.inference.manifest import OutputManifest


def pngs_only(name: str) -> bool:
    return name.endswith(".png")


def write(folder, *names):
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
    return [folder / name for name in names]


def test_a_rerun_removes_what_it_does_not_write_again_and_keeps_the_rest(tmp_path):
    first = OutputManifest(tmp_path, "test", pngs_only)
    written = write(tmp_path, "a.png", "b.png", "sub/c.png")
    first.begin(written)
    assert first.finish(written) == []
    write(tmp_path, "mine.png", "notes.txt")  # the user's own files, in no manifest

    second = OutputManifest(tmp_path, "test", pngs_only)
    second.begin(write(tmp_path, "a.png"))
    removed = second.finish([tmp_path / "a.png"])

    assert sorted(p.name for p in removed) == ["b.png", "c.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "mine.png", "notes.txt", "test_files.json"]
    assert json.loads((tmp_path / "test_files.json").read_text()) == {"files": ["a.png"]}


def test_an_interrupted_run_leaves_a_manifest_naming_everything_it_may_have_written(tmp_path):
    first = OutputManifest(tmp_path, "test", pngs_only)
    first.finish(write(tmp_path, "old.png"))
    interrupted = OutputManifest(tmp_path, "test", pngs_only)
    interrupted.begin([tmp_path / "new.png", tmp_path / "other.png"])
    write(tmp_path, "new.png")  # ... and then the run stops
    assert json.loads((tmp_path / "test_files.json").read_text())["files"] == [
        "new.png",
        "old.png",
        "other.png",
    ]

    rerun = OutputManifest(tmp_path, "test", pngs_only)
    rerun.finish(write(tmp_path, "other.png"))
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["other.png"]


def test_inputs_of_the_run_are_never_removed(tmp_path):
    OutputManifest(tmp_path, "test", pngs_only).finish(write(tmp_path, "a.png", "b.png"))
    rerun = OutputManifest(tmp_path, "test", pngs_only, keep=[tmp_path / "b.png"])
    assert rerun.finish([]) == [tmp_path / "a.png"]
    assert (tmp_path / "b.png").exists()


def test_a_damaged_manifest_removes_nothing_outside_what_the_command_writes(tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"keep")
    folder = tmp_path / "out"
    write(folder, "data.json", "a.png")
    listed = ["../outside.png", str(outside), "data.json", "a.png", 7, ""]
    (folder / "test_files.json").write_text(json.dumps({"files": listed}))

    assert OutputManifest(folder, "test", pngs_only).finish([]) == [folder / "a.png"]
    assert outside.exists() and (folder / "data.json").exists()
    (folder / "test_files.json").write_text("{not json")
    assert OutputManifest(folder, "test", pngs_only).finish([]) == []
