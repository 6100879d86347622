"""A bounded load test of `maskrcnn serve` on loopback: dynamic batching against none.

    python benchmarks/serve.py [--weights W] [--images DIR] [--clients 4] [--seconds 20]
                               [--max-batch 4] [--max-wait-ms 10] [--score-threshold 0.5]

Starts `python -m maskrcnn serve --port 0` as a subprocess twice, with --max-batch N (batching)
and with --max-batch 1 (none), and runs --clients threads against each for --warmup seconds
(not measured), then for --seconds, every client posting images in a loop over one keep-alive
connection (at most --max-requests each per phase).
Prints, per run, the requests answered, the throughput (images/s), the p50 and p99 latency,
the errors, the mean batch size (the server's maskrcnn_batch_size histogram over the timed
window) and the detections per answered image, and the machine. Every connection goes to
127.0.0.1.

A model that detects nothing never runs its mask head, pasting or RLE encoding, so the served
model must detect: without --weights, the packaged shapes config is trained first on a shapes
dataset for --train-minutes (a `maskrcnn train` run); without --images, shapes validation
images (256x192 PNG) are written to a temporary folder.
"""

import argparse
import http.client
import json
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from timing import machine

from maskrcnn.data.shapes import make_shapes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
START_SECONDS = 120


def serve(weights: Path, max_batch: int, max_wait_ms: float):
    """The server subprocess and its port; stderr (uvicorn's log) goes to a temporary file."""
    log = tempfile.TemporaryFile(mode="w+")
    command = [sys.executable, "-m", "maskrcnn", "serve", "--weights", str(weights), "--port", "0"]
    command += ["--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms), "--device", "cpu"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        try:
            match = re.match(r"serving on http://127\.0\.0\.1:(\d+)", lines.get(timeout=0.5))
        except queue.Empty:
            continue
        if match:
            return process, int(match.group(1)), log
    process.kill()
    log.seek(0)
    raise SystemExit(f"the server did not start:\n{log.read()}")


def batch_histogram(port: int) -> tuple[float, float]:
    """(sum, count) of the server's maskrcnn_batch_size histogram."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    values = dict(re.findall(r"^maskrcnn_batch_size_(sum|count) (\S+)$", text, re.MULTILINE))
    return float(values["sum"]), float(values["count"])


def client(port: int, images: list[bytes], query: str, stop_at: float, limit: int, offset: int, out: list):
    """Post images (from the `offset`-th on, in turn) until `stop_at` or `limit` requests;
    appends (latency seconds, status, detections) per request to `out`."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "application/octet-stream"}
    for n in range(limit):
        if time.monotonic() >= stop_at:
            break
        body = images[(offset + n) % len(images)]
        started = time.perf_counter()
        try:
            connection.request("POST", f"/v1/predict?{query}", body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            status = response.status
            detections = len(json.loads(answer)["detections"]) if status == 200 else 0
        except (OSError, http.client.HTTPException):
            status, detections = 0, 0
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        out.append((time.perf_counter() - started, status, detections))
    connection.close()


def load(args, port: int, images: list[bytes], seconds: float) -> tuple[list[tuple[float, int, int]], float]:
    """--clients clients posting for `seconds`: (latency, status, detections) of every request,
    and the wall time."""
    query = f"score_threshold={args.score_threshold}"
    results: list[tuple[float, int, int]] = []
    stop_at = time.monotonic() + seconds
    threads = [
        threading.Thread(target=client, args=(port, images, query, stop_at, args.max_requests, i, results))
        for i in range(args.clients)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, time.perf_counter() - started


def run(args, weights: Path, images: list[bytes], max_batch: int) -> dict:
    process, port, log = serve(weights, max_batch, args.max_wait_ms)
    try:
        # The same load, unmeasured, first: the first passes of each batch size pay for
        # allocations and kernel choices.
        load(args, port, images, args.warmup)
        before = batch_histogram(port)
        results, elapsed = load(args, port, images, args.seconds)
        after = batch_histogram(port)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        log.close()
    latencies = sorted(seconds * 1000 for seconds, status, _ in results if status == 200)
    detections = [count for _, status, count in results if status == 200]
    passes = after[1] - before[1]
    return {
        "max_batch": max_batch,
        "requests": len(results),
        "images/s": len(latencies) / elapsed,
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else float("nan"),
        "errors": sum(status != 200 for _, status, _ in results),
        "mean batch": (after[0] - before[0]) / passes if passes else float("nan"),
        "detections/image": statistics.mean(detections) if detections else float("nan"),
    }


def train_shapes(scratch: Path, minutes: float) -> Path:
    """The shapes config trained on a shapes dataset for `minutes` (`maskrcnn train`): a model
    whose detections exercise the mask head, pasting and encoding as a user's do."""
    data = make_shapes(scratch / "train_shapes", 300, 20)
    command = [sys.executable, "-m", "maskrcnn", "train", "shapes", "--out", str(scratch / "run")]
    command += ["--train-json", str(data["train_annotations"]), "--train-images", str(data["train_images"])]
    command += ["--budget-minutes", f"{minutes:g}", "--val-json", str(data["val_annotations"])]
    command += ["--val-images", str(data["val_images"])]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return scratch / "run" / "model_final.pt"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", help="a trained model (default: the shapes config, trained first)")
    parser.add_argument(
        "--train-minutes",
        type=float,
        default=3.0,
        help="without --weights: the shapes model's training budget",
    )
    parser.add_argument("--images", help="a folder of images to send (default: 16 shapes images)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--max-requests", type=int, default=10_000, help="per client, at most")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of unmeasured load first")
    parser.add_argument("--max-batch", type=int, default=4, help="the batching run's --max-batch")
    parser.add_argument("--max-wait-ms", type=float, default=10)
    parser.add_argument("--score-threshold", type=float, default=0.5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        weights = Path(args.weights) if args.weights else None
        if weights is None:
            weights = train_shapes(Path(scratch), args.train_minutes)
        if args.images:
            folder = Path(args.images)
        else:
            folder = make_shapes(Path(scratch) / "shapes", 0, 16)["val_images"]
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SystemExit(f"no images in {folder}")
        images = [path.read_bytes() for path in files]
        rows = [run(args, weights, images, batch) for batch in (args.max_batch, 1)]

    print(machine())
    print(
        f"{args.clients} clients x {args.seconds:g} s, {len(images)} images from {folder.name} "
        f"(first {files[0].name}), --max-wait-ms {args.max_wait_ms:g}, "
        f"score_threshold {args.score_threshold:g}, weights: "
        f"{args.weights or f'shapes config trained for {args.train_minutes:g} min'}"
    )
    print(
        f"{'--max-batch':>11} {'requests':>8} {'images/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6} {'mean batch':>10} {'detections/image':>16}"
    )
    for row in rows:
        print(
            f"{row['max_batch']:>11} {row['requests']:>8} {row['images/s']:>8.2f} {row['p50']:>8.1f} "
            f"{row['p99']:>8.1f} {row['errors']:>6} {row['mean batch']:>10.2f} "
            f"{row['detections/image']:>16.1f}"
        )


if __name__ == "__main__":
    main()
