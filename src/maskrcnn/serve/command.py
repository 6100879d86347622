"""The `serve` command: load the weights, build the app and run it under uvicorn until a
signal stops it.

The listening socket is bound here, before uvicorn starts, so that a port in use or an address
this machine does not have is one `error:` line (exit code 2), and so that with --port 0 the
port the system picked is known: the command prints `serving on http://HOST:PORT` once the
socket accepts connections (requests that arrive before uvicorn runs wait in its backlog).

SIGTERM (or Ctrl-C) stops it within `--shutdown-seconds` (30): uvicorn stops accepting
connections and new images are answered 503; the requests in flight get that long to finish;
images still waiting for the model a second before it are answered 503 and dropped, and a
request still running at the end (uvicorn's graceful timeout) is answered 503 too; the command
then prints how many requests were answered 503 and exits with code 0, at once (os._exit) if a
forward pass it cut off still runs: torch cannot interrupt it.
"""

import errno
import importlib.util
import ipaddress
import os
import socket
import sys

from maskrcnn.errors import OptionError, one_line
from maskrcnn.serve.settings import GRACEFUL_SHUTDOWN_SECONDS, MEGABYTE, ServeSettings

EXTRA_MISSING = "maskrcnn serve needs the serve extra: pip install 'maskrcnn[serve]'"
BACKLOG = 2048  # connections the system queues before uvicorn accepts them


def check_serve_extra() -> None:
    """Raise OptionError when a package of the serve extra is missing (before any work)."""
    modules = ("fastapi", "uvicorn", "prometheus_client", "starlette")
    multipart = ("python_multipart", "multipart")  # python-multipart's module, new name and old
    if any(importlib.util.find_spec(name) is None for name in modules) or all(
        importlib.util.find_spec(name) is None for name in multipart
    ):
        raise OptionError(EXTRA_MISSING)


def serve_command(
    weights: str,
    host: str,
    port: int,
    max_batch: int,
    max_wait_ms: float,
    device: str,
    precision: str,
    max_body_mb: int,
    max_image_pixels: int,
    shutdown_seconds: float = GRACEFUL_SHUTDOWN_SECONDS,
    max_detections: int | None = None,
) -> int:
    """Run `maskrcnn serve`; returns the exit code (0 after a signal stopped it gracefully).
    max_detections: the model's `roi_heads.detections_per_image` (None: the file's).
    Raises OptionError (exit code 2) for what stops it before it serves."""
    check_serve_extra()
    from maskrcnn.device import resolve_device
    from maskrcnn.engine.stop import StopRequest, signal_name
    from maskrcnn.interop.load import load_model
    from maskrcnn.interop.state_dicts import CheckpointError
    from maskrcnn.precision import autocast_dtype
    from maskrcnn.serve.app import create_app

    try:
        chosen = resolve_device(device)
    except (ValueError, RuntimeError) as error:  # --device cuda without CUDA
        raise OptionError(f"--device {device}: {one_line(error)}") from None
    try:
        autocast_dtype(precision, chosen, "--precision")  # warns once here, refused under --strict
    except ValueError as error:
        raise OptionError(one_line(error)) from None
    try:
        model = load_model(weights, device=chosen)
    except CheckpointError as error:
        raise OptionError(one_line(error)) from None
    if max_detections is not None:
        model.set_detections_per_image(max_detections)
    settings = ServeSettings(
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_body_bytes=max_body_mb * MEGABYTE,
        max_image_pixels=max_image_pixels,
        precision=precision,
        device=str(chosen),
        shutdown_seconds=shutdown_seconds,
    )
    app = create_app(model, settings)
    listener = bind(host, port)
    address = listener.getsockname()
    if not ipaddress.ip_address(address[0].split("%")[0]).is_loopback:
        print(
            f"warning: --host {host}: the server is reachable from other machines, and it has no "
            "authentication; use --host 127.0.0.1 to serve this machine only",
            file=sys.stderr,
        )
    shown = f"[{address[0]}]" if listener.family == socket.AF_INET6 else address[0]
    print(f"serving on http://{shown}:{address[1]}", flush=True)
    server = _uvicorn_server(app, shutdown_seconds)
    # uvicorn handles SIGTERM and SIGINT while it runs and raises them again once it has shut
    # down; recorded here, they end the command with code 0: stopping is how a server ends.
    with StopRequest() as stop:
        server.run(sockets=[listener])
    batcher = app.state.batcher
    if stop.requested:
        print(stopped_line(signal_name(stop.signum), batcher.dropped, batcher.cut_off), file=sys.stderr)
    if batcher.running:
        # A pass the shutdown cut off still runs in the model's thread, and torch cannot interrupt
        # it. The interpreter's exit would tear down torch's threads under it (std::terminate:
        # SIGABRT, exit code -6); nothing is left to answer or save, so end here, output written.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def stopped_line(signal: str, dropped: int, cut_off: int) -> str:
    """The last line after a stop signal: which requests in flight did not get their detections.
    dropped: images still waiting for the model near the end of the shutdown time; cut_off:
    requests still running when it ran out (its forward pass, or its upload, unfinished)."""
    if not dropped and not cut_off:
        return f"stopped by {signal} after answering the requests in flight"
    parts = []
    if dropped:
        parts.append(f"{_requests(dropped)} still waiting for the model")
    if cut_off:
        parts.append(f"{_requests(cut_off)} cut off when --shutdown-seconds ran out")
    return f"stopped by {signal}; answered 503 instead of detections: {' and '.join(parts)}"


def _requests(count: int) -> str:
    return f"{count} request" if count == 1 else f"{count} requests"


def _uvicorn_server(app, shutdown_seconds: float):
    """uvicorn's server for `app`, which also tells the app when the first stop signal
    arrives (`app.state.begin_shutdown`: from then on new images are refused, and those still
    waiting are answered 503 before `shutdown_seconds` have passed)."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            if not self.should_exit:
                app.state.begin_shutdown()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, lifespan="on", log_level="info", timeout_graceful_shutdown=shutdown_seconds)
    return Server(config)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one), or OptionError naming the option."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise OptionError(
            f"--host {host}: not an address of this machine nor a name it can resolve ({error.strerror})"
        ) from None
    listener = socket.socket(family, kind, proto)
    try:
        # A restarted server can take over its port while old connections linger in TIME_WAIT.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(BACKLOG)
    except OSError as error:
        listener.close()
        if error.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            raise OptionError(f"--host {host}: cannot listen there ({error.strerror})") from None
        raise OptionError(f"--port {port}: cannot listen on {host} port {port} ({error.strerror})") from None
    return listener
