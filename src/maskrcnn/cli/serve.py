"""`maskrcnn serve`: an HTTP API and web page over a model (the server itself: `maskrcnn.serve`)."""

import argparse

from maskrcnn.cli import options
from maskrcnn.cli.checks import Host, Number, WholeNumber
from maskrcnn.cli.paths import check_weights
from maskrcnn.serve import settings as serve_settings


def add(subcommands) -> argparse.ArgumentParser:
    parser = subcommands.add_parser(
        "serve",
        help="an HTTP API and web page over a model, with dynamic batching",
        description=(
            "Serve a model over HTTP until SIGTERM or Ctrl-C: POST /v1/predict (an image as the "
            "multipart field 'file' or the raw body; query options score_threshold, mask_format rle or "
            "polygons, tile, tile_overlap) answers its detections as JSON, GET /v1/model describes "
            "the model, GET /healthz and GET /metrics (Prometheus) watch the server, GET / is a web "
            "page to try it. Requests arriving together share a forward pass (--max-batch). Prints "
            "'serving on http://HOST:PORT' once it listens. Needs the serve extra (pip install "
            "'maskrcnn[serve]'). Exit code 0 after a signal stopped it, 2 if it could not start."
        ),
    )
    options.add_weights(parser)
    parser.add_argument(
        "--host",
        type=Host(),
        default=serve_settings.DEFAULT_HOST,
        help="the address to listen on: 127.0.0.1 is this machine only; 0.0.0.0 every interface, "
        "reachable from other machines, with no authentication (default: %(default)s)",
    )
    parser.add_argument(
        "--port",
        type=WholeNumber(0, 65535),
        default=serve_settings.DEFAULT_PORT,
        help="the TCP port; 0: a free port, printed when serving (default: %(default)s)",
    )
    parser.add_argument(
        "--max-batch",
        type=WholeNumber(1, serve_settings.MAX_BATCH),
        default=serve_settings.DEFAULT_MAX_BATCH,
        metavar="N",
        help="images run in one forward pass at most, from requests that wait together; 1: every "
        "request alone (default: %(default)s)",
    )
    parser.add_argument(
        "--max-wait-ms",
        type=Number(0, 10000),
        default=serve_settings.DEFAULT_MAX_WAIT_MS,
        metavar="MS",
        help="milliseconds a batch's first image waits for others to join it (default: %(default)s)",
    )
    options.add_max_detections(parser)
    options.add_device(parser)
    options.add_precision(parser)
    parser.add_argument(
        "--max-body-mb",
        type=WholeNumber(1, 100_000),
        default=serve_settings.DEFAULT_MAX_BODY_MB,
        metavar="MB",
        help="refuse (413) request bodies over MB megabytes of 10^6 bytes (default: %(default)s)",
    )
    parser.add_argument(
        "--max-image-pixels",
        type=WholeNumber(0),
        default=serve_settings.DEFAULT_MAX_IMAGE_PIXELS,
        metavar="N",
        help="refuse (413), before decoding, images whose header claims more pixels (width x height "
        "x planes; 0: no limit; the default is a 7000 x 7000 image) (default: %(default)s)",
    )
    parser.add_argument(
        "--shutdown-seconds",
        type=Number(0, 3600),
        default=serve_settings.GRACEFUL_SHUTDOWN_SECONDS,
        metavar="S",
        help="after SIGTERM or Ctrl-C, what the requests in flight have: images still waiting for the "
        "model then are answered 503, and a pass still running is cut off (default: %(default)s)",
    )
    return parser


def check(args: argparse.Namespace) -> None:
    check_weights(args.weights)
    from maskrcnn.serve.command import check_serve_extra  # torch-free

    check_serve_extra()


def run(args: argparse.Namespace) -> int:
    from maskrcnn.serve.command import serve_command

    return serve_command(
        args.weights,
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        device=args.device,
        precision=args.precision,
        max_body_mb=args.max_body_mb,
        max_image_pixels=args.max_image_pixels,
        shutdown_seconds=args.shutdown_seconds,
        max_detections=args.max_detections,
    )
