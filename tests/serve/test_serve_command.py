"""`maskrcnn serve` as a command: its defaults, what stops it from starting, and a graceful
shutdown: SIGTERM while a request is in flight lets that request finish with a complete 200,
then the process exits with code 0. Every connection goes to 127.0.0.1."""

import importlib.util
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from serve_helpers import encoded, picture

from maskrcnn.cli.main import main, parse_args
from maskrcnn.serve.command import EXTRA_MISSING, stopped_line

START_SECONDS = 120  # importing torch on a loaded 2-core machine, then the model
WAIT_SECONDS = 60
_local = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy for 127.0.0.1


def test_serve_defaults_to_loopback_and_port_0_is_allowed():
    args = parse_args(["serve", "--weights", "w.pt"])
    assert args.host == "127.0.0.1"
    assert (args.port, args.max_batch, args.max_wait_ms, args.device, args.precision) == (
        8000,
        4,
        10.0,
        "auto",
        "fp32",
    )
    assert parse_args(["serve", "--weights", "w.pt", "--port", "0"]).port == 0


def test_without_the_serve_extra_it_says_what_to_install(weights, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a)
    )
    assert main(["serve", "--weights", str(weights), "--port", "0"]) == 2
    assert capsys.readouterr().err == f"error: {EXTRA_MISSING}\n"
    assert EXTRA_MISSING == "maskrcnn serve needs the serve extra: pip install 'maskrcnn[serve]'"


def test_a_port_in_use_is_one_error_line(weights, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--weights", str(weights), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: --port {port}: cannot listen on 127.0.0.1 port {port} (")
        and err.count("\n") == 1
    )


class Server:
    """`python -m maskrcnn serve --port 0` in a subprocess, its output drained by threads (the
    stdout lines also queued in `lines`). python: how Python runs the CLI (`-c CODE` instead)."""

    def __init__(self, weights, *options, python=("-m", "maskrcnn")):
        command = [
            sys.executable,
            *python,
            "serve",
            "--weights",
            str(weights),
            "--port",
            "0",
            *options,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.out, self.err, self.lines = [], [], queue.Queue()
        lines = self.lines
        self.drains = [
            threading.Thread(target=self._drain, args=(self.process.stdout, self.out, lines), daemon=True),
            threading.Thread(target=self._drain, args=(self.process.stderr, self.err, None), daemon=True),
        ]
        for drain in self.drains:
            drain.start()
        deadline = time.monotonic() + START_SECONDS
        self.port = None
        while self.port is None and time.monotonic() < deadline and self.process.poll() is None:
            try:
                match = re.fullmatch(r"serving on http://127\.0\.0\.1:(\d+)\n", lines.get(timeout=0.5))
            except queue.Empty:
                continue
            self.port = match and int(match.group(1))
        assert self.port, f"no 'serving on' line; stdout {self.out}, stderr {self.err}"

    @staticmethod
    def _drain(stream, lines, found):
        for line in stream:
            lines.append(line)
            if found is not None:
                found.put(line)

    def drained(self) -> None:
        """Wait until the process's output is read to its end (it has exited)."""
        for drain in self.drains:
            drain.join(timeout=WAIT_SECONDS)
            assert not drain.is_alive(), "the server's output did not end"

    def get(self, path: str) -> str:
        with _local.open(f"http://127.0.0.1:{self.port}{path}", timeout=WAIT_SECONDS) as response:
            return response.read().decode()

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=WAIT_SECONDS)


@pytest.fixture
def server(weights):
    started = Server(weights)
    try:
        yield started
    finally:
        started.close()


def _sample(server: Server, name: str, **labels) -> float:
    for family in text_string_to_metric_families(server.get("/metrics")):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0


def _in_progress(server: Server) -> float:
    return _sample(server, "maskrcnn_requests_in_progress", endpoint="/v1/predict")


def _wait_until(condition, what: str):
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def _refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return False
    except ConnectionRefusedError:
        return True


def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(server):
    assert json.loads(server.get("/healthz")) == {"status": "ok"}
    data = encoded(picture(30, height=240, width=320))
    head = (
        "POST /v1/predict?score_threshold=0 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_SECONDS) as upload:
        # Half the image: the request is in flight, its handler waiting for the rest.
        upload.sendall(head + data[: len(data) // 2])
        _wait_until(lambda: _in_progress(server) == 1, "the request is being answered")
        server.process.send_signal(signal.SIGTERM)
        _wait_until(lambda: _refuses_connections(server.port), "the server stops accepting connections")
        # The shutdown has begun; the request in flight is kept open however long its client takes
        # (up to the graceful timeout): a second here, then the rest of the image.
        time.sleep(1.0)
        assert server.process.poll() is None  # still running: the request is not answered yet
        upload.sendall(data[len(data) // 2 :])
        answer = b""
        while chunk := upload.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), answer[:500]
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
    assert len(body) == length  # the whole answer
    prediction = json.loads(body)
    assert prediction["image"] == {"width": 320, "height": 240}
    assert len(prediction["detections"]) > 0
    assert server.process.wait(timeout=WAIT_SECONDS) == 0
    server.drained()
    assert "stopped by SIGTERM after answering the requests in flight\n" in server.err
    assert not [line for line in server.err if "Traceback" in line]


# `maskrcnn serve` with a model whose forward pass outlasts any shutdown time. It runs inside
# torch, as a real pass does: if the command let the interpreter exit under it, torch's threads
# would be torn down mid-work (std::terminate: SIGABRT, exit code -6).
SLOW_MODEL = """
import sys
import torch
from maskrcnn.cli.main import main
from maskrcnn.modeling.mask_rcnn import MaskRCNN

def endless_predict(self, images, *args, **kwargs):
    print("pass started", flush=True)
    x = torch.ones(512, 512)
    while True:
        x = torch.tanh(x @ x)

MaskRCNN.predict = endless_predict
sys.exit(main(sys.argv[1:]))
"""


def _post(port: int, data: bytes, answers: dict, key: str) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/predict", data=data, method="POST")
    try:
        with _local.open(request, timeout=WAIT_SECONDS) as response:
            answers[key] = (response.status, json.loads(response.read()))
    except urllib.error.HTTPError as error:
        answers[key] = (error.code, json.loads(error.read()))


def test_sigterm_while_a_pass_outlasts_the_shutdown_time_answers_json_503_and_exits_0(weights):
    server = Server(weights, "--shutdown-seconds", "1", python=("-c", SLOW_MODEL))
    answers, data = {}, encoded(picture(31))
    try:
        posts = {
            key: threading.Thread(target=_post, args=(server.port, data, answers, key))
            for key in ("running", "waiting")
        }
        posts["running"].start()
        while server.lines.get(timeout=WAIT_SECONDS) != "pass started\n":
            pass
        posts["waiting"].start()
        _wait_until(lambda: _sample(server, "maskrcnn_queue_depth") == 1, "the second image waits")
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=WAIT_SECONDS) == 0
        for post in posts.values():
            post.join(WAIT_SECONDS)
        server.drained()
    finally:
        server.close()
    status, body = answers["running"]
    assert status == 503 and body["error"].startswith("the server shut down before this request was answered")
    status, body = answers["waiting"]
    assert status == 503 and body["error"].startswith("the server shut down before this image's turn came")
    assert server.err[-1] == (
        "stopped by SIGTERM; answered 503 instead of detections: 1 request still waiting for the model "
        "and 1 request cut off when --shutdown-seconds ran out\n"
    )
    assert not [line for line in server.err if "Traceback" in line or "terminate called" in line]


def test_the_last_line_counts_the_requests_that_got_no_detections():
    assert stopped_line("SIGINT", 0, 0) == "stopped by SIGINT after answering the requests in flight"
    assert stopped_line("SIGTERM", 2, 0) == (
        "stopped by SIGTERM; answered 503 instead of detections: 2 requests still waiting for the model"
    )
    assert stopped_line("SIGTERM", 0, 3) == (
        "stopped by SIGTERM; answered 503 instead of detections: 3 requests cut off when "
        "--shutdown-seconds ran out"
    )
