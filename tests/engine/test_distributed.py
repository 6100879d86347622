"""Several processes (torchrun, gloo on the CPU): eval and predict share the images and write
what one process writes; a failure on one process stops all of them."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

import maskrcnn
from maskrcnn.checkpoint import save_checkpoint
from maskrcnn.cli.main import main
from maskrcnn.engine import distributed
from maskrcnn.inference import predict
from maskrcnn.testing import tiny_model_config

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "shapes.yaml"
SIZES = [(64, 48), (40, 72), (56, 56), (48, 64), (72, 40)]  # (width, height): an odd count of images


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    """Five images of various sizes, their annotations (one crowd region) and a tiny model."""
    root = tmp_path_factory.mktemp("split")
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for image_id, (width, height) in enumerate(SIZES, start=1):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": height, "width": width})
        for category, (x, y, w, h) in ((1, (2, 3, 30, 20)), (2, (10, 12, 25, 30))):
            polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": category, "iscrowd": 0}
                | {"bbox": [x, y, w, h], "segmentation": [polygon]}
            )
    annotations[-1]["iscrowd"] = 1
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    split = {"images": images, "annotations": annotations, "categories": categories}
    (root / "split.json").write_text(json.dumps(split))
    torch.manual_seed(0)
    save_checkpoint(root / "model.pt", maskrcnn.build_model(tiny_model_config(category_ids=(1, 2))))
    return root


def one_process(args: list[str]) -> int:
    """main(args) in this process with one thread, as each torchrun worker has (same rounding)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(args)
    finally:
        torch.set_num_threads(threads)


def torchrun(args: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "maskrcnn", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def test_eval_under_torchrun_writes_what_one_process_writes(split, tmp_path):
    def args(out):
        files = ["--json", str(split / "split.json"), "--images", str(split), "--out", str(out)]
        return ["eval", str(CONFIG), "--weights", str(split / "model.pt"), *files, "--device", "cpu"]

    assert one_process(args(tmp_path / "one")) == 0
    completed = torchrun(args(tmp_path / "two"))
    assert completed.returncode == 0, completed.stderr
    expected = (tmp_path / "one" / "results.json").read_text()
    assert len({r["image_id"] for r in json.loads(expected)}) == len(SIZES)  # detections everywhere
    assert (tmp_path / "two" / "results.json").read_text() == expected
    assert (tmp_path / "two" / "metrics.json").read_text() == (tmp_path / "one" / "metrics.json").read_text()
    assert completed.stdout.count("metrics, results and plots written to") == 1  # rank 0 alone reports
    assert "3/3" in completed.stderr and "5/5" not in completed.stderr  # rank 0's bar: its 3 of 5 images


def _as_torchrun_worker(rank: int, world_size: int, port: int) -> None:
    """The environment torchrun gives worker `rank`."""
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )


def _predict_worker(rank: int, world_size: int, port: int, args: list[str], out: str) -> None:
    _as_torchrun_worker(rank, world_size, port)
    torch.set_num_threads(1)
    read = []
    load_image = predict.load_image

    def recording(path, *args, **kwargs):
        read.append(Path(path).name)
        return load_image(path, *args, **kwargs)

    predict.load_image = recording  # a spawned process: nothing else runs in it
    code = main(args)
    Path(out, f"rank{rank}.json").write_text(json.dumps({"code": code, "read": read}))


def test_predict_in_two_processes_writes_what_one_process_writes(split, tmp_path):
    (split / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")  # the third of six images
    images = [str(split / n) for n in ("1.png", "2.png", "broken.png", "3.png", "4.png", "5.png")]

    def args(out):
        return ["predict", *images, "--weights", str(split / "model.pt"), "--out", str(out)]

    assert one_process(args(tmp_path / "one")) == 1  # an image failed
    worker_args = (2, _free_port(), args(tmp_path / "two"), str(tmp_path))
    mp.spawn(_predict_worker, args=worker_args, nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["code"] for r in ranks] == [1, 1]  # the same exit code on both
    assert [r["read"] for r in ranks] == [["1.png", "broken.png", "4.png"], ["2.png", "3.png", "5.png"]]
    for name in ("predictions.json", "images.json"):
        assert (tmp_path / "two" / name).read_text() == (tmp_path / "one" / name).read_text(), name
    ids = [i["id"] for i in json.loads((tmp_path / "two" / "images.json").read_text())]
    assert ids == [1, 2, 4, 5, 6]  # positions among all the inputs, whichever process read them
    overlays = sorted(p.name for p in (tmp_path / "one").glob("*.png"))
    assert overlays == ["1.png", "2.png", "3.png", "4.png", "5.png"]
    assert sorted(p.name for p in (tmp_path / "two").glob("*.png")) == overlays
    for name in overlays:
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name


def _helpers_worker(rank: int, world_size: int, port: int, out: str) -> None:
    _as_torchrun_worker(rank, world_size, port)
    context = distributed.setup("cpu")
    try:
        report = {
            "all_gather": distributed.all_gather({"rank": rank}, context),
            "gather_to_main": distributed.gather_to_main([rank] * (rank + 1), context),
        }
        distributed.raise_if_any_failed(None, context)  # nobody failed: nobody raises
        try:
            failure = ValueError("bad.png: cannot read image") if rank == 1 else None
            distributed.raise_if_any_failed(failure, context)
        except ValueError as error:
            report["raised"] = str(error)
        try:
            distributed.raise_if_any_failed(KeyError("boom") if rank == 0 else None, context)
        except (KeyError, RuntimeError) as error:
            report["raised again"] = f"{type(error).__name__}: {error}"
        Path(out, f"rank{rank}.json").write_text(json.dumps(report))
    finally:
        distributed.teardown(context)


def test_gathers_and_a_failure_on_one_process_reach_every_process(tmp_path):
    mp.spawn(_helpers_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    first, second = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert first["all_gather"] == second["all_gather"] == [{"rank": 0}, {"rank": 1}]
    assert first["gather_to_main"] == [[0], [1, 1]] and second["gather_to_main"] is None
    assert second["raised"] == "bad.png: cannot read image"  # its own exception
    # the other a ValueError too, which the commands report on one line
    assert first["raised"] == "process 1: bad.png: cannot read image"
    assert first["raised again"] == "KeyError: 'boom'"
    assert second["raised again"] == "RuntimeError: process 0: 'boom'"
