"""A wrong option, value or path is answered before torch is imported.

Importing torch takes seconds on a cold machine, so a command that checks what the user typed
only after loading it keeps them waiting for a one-line error. Each case runs the command line
in a fresh interpreter and asserts the error line, exit code 2 and that torch was never loaded;
the last case checks the other side: a command that does its work loads torch.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "shapes.yaml")

# Runs maskrcnn's command line and reports, as the last stdout line, the exit code and whether
# torch was imported.
PROBE = (
    "import json, sys\n"
    "from maskrcnn.cli.main import main\n"
    "code = main(sys.argv[1:])\n"
    "print(json.dumps([code, 'torch' in sys.modules]))\n"
)


def run(args: list[str], cwd: Path, env: dict | None = None) -> tuple[int, bool, str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=env
    )
    code, loaded = json.loads(done.stdout.strip().splitlines()[-1])
    return code, loaded, done.stderr


CASES = {
    "predict, missing weights": (
        ["predict", "--weights", "gone.pt", "img.png", "--out", "o"],
        "--weights gone.pt",
    ),
    "predict, missing image": (
        ["predict", "--weights", "w.pt", "gone.png", "--out", "o"],
        "IMAGE_OR_DIR gone.png",
    ),
    "predict, output is a file": (["predict", "--weights", "w.pt", "img.png", "--out", "img.png"], "--out"),
    "predict, misspelt option": (
        ["predict", "--weights", "w.pt", "img.png", "--score-treshold", "1"],
        "--score-threshold",
    ),
    "train, bad override": (["train", CONFIG, "solver.base_lr=-1"], "solver.base_lr"),
    "train, malformed YAML override": (
        ["train", CONFIG, "data.min_sizes_train=[480,512"],
        "data.min_sizes_train",
    ),
    "train, missing images": (
        ["train", CONFIG, "--train-json", "a.json", "--train-images", "gone"],
        "--train-images gone",
    ),
    "eval, missing weights": (
        ["eval", CONFIG, "--weights", "gone.pt", "--json", "a.json", "--images", "images"],
        "--weights gone.pt",
    ),
    "eval, missing annotations": (
        ["eval", CONFIG, "--weights", "w.pt", "--json", "gone.json", "--images", "images"],
        "--json gone.json",
    ),
    "export, missing weights": (["export", "m.onnx", "--weights", "gone.pt"], "--weights gone.pt"),
    "export, missing check image": (
        ["export", "m.onnx", "--weights", "w.pt", "--check-image", "gone.png"],
        "--check-image",
    ),
    "make-shapes, output is a file": (["make-shapes", "img.png"], "OUT img.png"),
    "train, unknown built-in config": (["train", "shapse"], "CONFIG shapse"),
    "ablate, misspelt override": (["ablate", "2c", "model.roi_heads.poolr=x"], "model.roi_heads.poolr"),
}


@pytest.fixture
def folder(tmp_path) -> Path:
    (tmp_path / "w.pt").write_bytes(b"not read: the command stops before it")
    (tmp_path / "img.png").write_bytes(b"not read either")
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "images").mkdir()
    return tmp_path


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_wrong_input_is_answered_without_loading_torch(case, folder):
    args, named = CASES[case]
    code, loaded, stderr = run(args, folder)
    assert code == 2, stderr
    assert named in stderr and "error:" in stderr and "Traceback" not in stderr, stderr
    assert not loaded, f"torch was imported before {case!r} was refused"


def test_a_command_that_works_loads_torch(folder):
    # The probe itself is sound: a command that gets past its checks imports torch.
    code, loaded, stderr = run(["predict", "--weights", "w.pt", "img.png", "--out", "out"], folder)
    assert code == 2 and "w.pt" in stderr, stderr  # the loader, which needs torch, refuses the file
    assert loaded


def test_a_wrong_fast_paths_variable_is_refused_before_any_work(folder):
    # Once, at the start (not per image, after loading the model), whatever the command.
    env = {**os.environ, "MASKRCNN_FAST_PATHS": "maybe"}
    for args in (["predict", "--weights", "w.pt", "img.png", "--out", "o"], ["make-shapes", "shapes"]):
        code, loaded, stderr = run(args, folder, env)
        assert code == 2, stderr
        assert "MASKRCNN_FAST_PATHS='maybe'" in stderr and stderr.count("error:") == 1, stderr
        assert not loaded and not (folder / "shapes").exists()
