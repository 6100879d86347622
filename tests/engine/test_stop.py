"""Stop signals: a flag for the training loop, ignored by data workers, one line for commands."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskrcnn.engine.stop import Interrupted, StopRequest, ignore_stop_signals, signals_raise_interrupted


def test_a_stop_request_records_the_signal_and_restores_the_handlers():
    before = signal.getsignal(signal.SIGUSR1)
    with StopRequest() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
        assert stop.requested and stop.signum == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) == before


def test_commands_get_an_interrupted_exception_with_the_shells_exit_code():
    with pytest.raises(Interrupted) as raised:
        with signals_raise_interrupted():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    assert raised.value.exit_code == 143 and str(raised.value) == "stopped by SIGTERM"


def test_a_worker_survives_the_jobs_signals_and_ends_on_a_second_sigterm():
    script = (
        "import os, signal, sys, time\n"
        "from maskrcnn.engine.stop import ignore_stop_signals\n"
        "ignore_stop_signals(0)\n"
        "for sig in (signal.SIGINT, signal.SIGUSR1, signal.SIGTERM):\n"
        "    os.kill(os.getpid(), sig)\n"
        "print('alive', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(5)\n"
        "print('still alive', flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["alive"]
    assert done.returncode == -signal.SIGTERM
    assert ignore_stop_signals  # the function a DataLoader's worker_init_fn is given


def test_predict_stopped_by_the_job_signal_ends_with_one_line_and_no_partial_file(tmp_path):
    from maskrcnn import build_model
    from maskrcnn.checkpoint import save_checkpoint
    from maskrcnn.testing import tiny_model_config

    save_checkpoint(tmp_path / "model.pt", build_model(tiny_model_config(min_size=320, max_size=480)))
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for index in range(200):
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(images / f"{index:03d}.png")
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "maskrcnn",
        "predict",
        str(images),
        "--weights",
        str(tmp_path / "model.pt"),
    ]
    process = subprocess.Popen(
        [*command, "--out", str(out), "--device", "cpu"],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*.png"))) < 3:
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"stopped by SIGTERM: predictions.json and images.json in {out} hold the "), last
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    overlays = list(out.glob("*.png"))
    assert 3 <= len(overlays) < 200
    assert f"hold the {len(overlays)} of 200 images done before it" in last
    for overlay in overlays:  # each one whole: written beside and renamed into place
        with Image.open(overlay) as picture:
            picture.load()
    # the JSON files hold exactly the images whose overlays are there
    done = json.loads((out / "images.json").read_text())
    assert sorted(Path(image["file_name"]).name for image in done) == sorted(p.name for p in overlays)
