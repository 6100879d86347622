"""The built-in configs: packaged with the code, named by CONFIG arguments, listed by `maskrcnn configs`."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from maskrcnn.builtin_configs import builtin_configs, describe, first_sentence, resolve_config
from maskrcnn.cli.main import main
from maskrcnn.errors import OptionError

ROOT = Path(__file__).resolve().parents[1]


def leading_comment(path: Path) -> str:
    """The file's leading `# ` lines joined, read here independently of `describe`."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("# "):
            break
        lines.append(line[2:].strip())
    return " ".join(lines)


def test_the_built_in_configs_are_the_packaged_yaml_files():
    configs = builtin_configs()
    assert {"shapes", "mask_rcnn_R_50_FPN_1x"} <= set(configs)
    package = Path(__import__("maskrcnn").__file__).parent / "configs"
    assert sorted(configs.values()) == sorted(package.glob("*.yaml"))
    # The clone's configs/ is the packaged folder, so its paths in the README and tests stay valid.
    assert (ROOT / "configs" / "shapes.yaml").resolve() == configs["shapes"]


@pytest.mark.parametrize("name", sorted(builtin_configs()))
def test_every_built_in_config_starts_with_a_description(name):
    path = builtin_configs()[name]
    text = describe(path)
    assert len(text) > 20 and "\n" not in text
    assert leading_comment(path).startswith(text.rstrip("."))


def test_the_description_is_the_first_sentence_or_the_clause_before_a_colon():
    assert first_sentence("A model (with a. dot: inside). More text.") == "A model (with a. dot: inside)."
    assert first_sentence("The recipe for R50: 16 images per batch. Run it.") == "The recipe for R50"
    assert first_sentence("no full stop at all") == "no full stop at all"
    assert first_sentence("") == ""


def test_a_config_is_resolved_by_name_by_name_yaml_or_by_path(tmp_path, monkeypatch):
    shapes = str(builtin_configs()["shapes"])
    assert resolve_config("shapes") == shapes
    assert resolve_config("shapes.yaml") == shapes
    own = tmp_path / "mine.yaml"
    own.write_text("solver:\n  max_iter: 3\n")
    assert resolve_config(str(own)) == str(own)
    monkeypatch.chdir(tmp_path)
    assert resolve_config("mine.yaml") == "mine.yaml"  # an existing file, as given
    (tmp_path / "shapes").mkdir()  # a dataset folder named like the config does not hide it
    assert resolve_config("shapes") == shapes
    (tmp_path / "shapes.yaml").write_text("model: {}\n")  # a file of that name is the user's own
    assert resolve_config("shapes.yaml") == "shapes.yaml"


@pytest.mark.parametrize(
    "text, problem",
    [
        ("shapse", "CONFIG shapse: no such file or built-in config; did you mean shapes?"),
        ("shapse.yaml", "CONFIG shapse.yaml: no such file; did you mean shapes?"),
        ("elsewhere/shapes.yaml", "CONFIG elsewhere/shapes.yaml: no such file; did you mean shapes?"),
        ("zzzz", "CONFIG zzzz: no such file or built-in config (`maskrcnn configs` lists"),
    ],
)
def test_an_unknown_config_is_one_line_with_the_close_names(text, problem, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OptionError) as raised:
        resolve_config(text)
    assert str(raised.value).startswith(problem) and "\n" not in str(raised.value)


def test_train_with_an_unknown_name_exits_2_with_a_did_you_mean(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "mask_rcnn_R_50_FPN", "--out", "run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: CONFIG mask_rcnn_R_50_FPN: no such file or built-in config; did you mean")
    assert "mask_rcnn_R_50_FPN_1x" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_train_takes_a_built_in_name_from_any_folder(tmp_path, monkeypatch, capsys):
    # The packaged config is read (its data paths are relative, so they are missing here).
    monkeypatch.chdir(tmp_path)
    assert main(["train", "shapes", "--out", "run"]) == 2
    err = capsys.readouterr().err
    assert f"(from {builtin_configs()['shapes']}): no such file" in err


def test_configs_lists_every_built_in_config_with_its_description(capsys):
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    configs = builtin_configs()
    assert [line.split()[0] for line in lines] == sorted(configs)
    column = {line.index(describe(configs[line.split()[0]])) for line in lines}
    assert len(column) == 1  # the descriptions start in one column
    for line in lines:
        name, _, text = line.partition(" ")
        assert text.strip() == describe(configs[name])
        assert leading_comment(configs[name]).startswith(text.strip().rstrip("."))


def test_configs_name_prints_the_path_and_the_file(capsys):
    assert main(["configs", "shapes.yaml"]) == 0
    printed = capsys.readouterr().out
    path = builtin_configs()["shapes"]
    assert printed == f"# {path}\n{path.read_text()}"


def test_a_wheel_holds_the_configs(tmp_path):
    # Built from a copy of the sources, so that the build leaves nothing in the clone; without
    # build isolation nothing is downloaded (about 3 s).
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", "dist", "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    if done.returncode != 0 and "No module named" in done.stderr:  # pip or setuptools missing
        pytest.skip(f"cannot build a wheel here: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr
    (wheel,) = (source / "dist").glob("maskrcnn-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"maskrcnn/configs/{name}.yaml" for name in builtin_configs()} <= names


def test_the_readme_shows_what_maskrcnn_configs_prints(capsys):
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```bash\nmaskrcnn configs\nmaskrcnn configs shapes\n```\n\n```\n")
    block = readme[start:].split("```\n", 3)[2]
    assert main(["configs"]) == 0
    assert block == capsys.readouterr().out
