"""The HTTP API over a model: `create_app(model, settings)` builds the FastAPI app.

  POST /v1/predict   an image (multipart field `file`, or the raw body) -> its detections
  GET  /v1/model     classes, keypoints, input settings, config, limits and device
  GET  /healthz      {"status": "ok"}
  GET  /metrics      Prometheus text format (serve/metrics.py)
  GET  /             the web page (serve/static/index.html); /static/<name> its files

Every error is JSON {"error": "<one line naming the problem>"}: 400 for a bad image, query
value or unknown query parameter, 413 for a body or image over the limits, 500 when inference
fails, 503 while shutting down (a request still running when the shutdown time runs out
included). A request moves through: the body read within its limit (on the event loop, which only
waits for bytes), decoding in the thread pool, the batcher's model thread (serve/batching.py),
and encoding the masks back in the thread pool, so that decoding and encoding of some requests
overlap with the inference of others.
"""

import asyncio
import time
from contextlib import asynccontextmanager
from typing import Literal

import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from maskrcnn import choices  # read when the app is made: one default for every path
from maskrcnn.data.images import to_image_tensor
from maskrcnn.errors import one_line
from maskrcnn.modeling.mask_rcnn import MaskRCNN
from maskrcnn.serve.batching import Batcher, BatcherStopped
from maskrcnn.serve.metrics import RequestMetricsMiddleware, ServerMetrics
from maskrcnn.serve.responses import detections_json, keep_scoring, model_json
from maskrcnn.serve.settings import ServeSettings, tile_problem, unknown_option_problem
from maskrcnn.serve.uploads import RequestError, decode_image, read_upload

ERROR_KINDS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def create_app(model: MaskRCNN, settings: ServeSettings | None = None) -> FastAPI:
    """The app serving `model` (in eval mode, on its device) within `settings`' limits.

    The batcher's thread starts with the app's lifespan. `app.state.begin_shutdown()` (the
    serve command calls it when a stop signal arrives) lets the open connections' images run
    until shortly before `settings.shutdown_seconds` have passed, then answers those still
    waiting (and any later one) 503 while their connections are open; when the app shuts
    down, the batcher is stopped without waiting for a pass still running. `app.state` also
    holds `metrics` (ServerMetrics) and `batcher`.
    """
    settings = settings or ServeSettings()
    metrics = ServerMetrics(settings.max_batch)
    batcher = Batcher(_model_runner(model, settings), settings.max_batch, settings.max_wait_ms, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        try:
            yield
        finally:
            # Once a request was cut off, the shutdown time is over: a pass still running has
            # nobody left to answer, so waiting for it would only delay the exit.
            await run_in_threadpool(batcher.stop, 0.0 if batcher.cut_off else 1.0)

    # No /docs or /redoc: their pages load scripts from a CDN.
    app = FastAPI(title="maskrcnn serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.metrics, app.state.batcher = metrics, batcher
    # The waiting images are answered a second before uvicorn cuts the connections off.
    app.state.begin_shutdown = lambda: batcher.begin_shutdown(max(settings.shutdown_seconds - 1.0, 0.0))
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    _add_error_handlers(app, metrics)
    _add_predict(app, model, settings, batcher)
    _add_pages(app, model, settings, metrics)
    return app


def _model_runner(model: MaskRCNN, settings: ServeSettings):
    """What the batcher's thread runs on a batch: the model's predict, its results on the host."""

    def run_model(images, score_threshold, tile, tile_overlap):
        tiling = {} if tile is None else {"tile": tile, "tile_overlap": tile_overlap}
        results = model.predict(
            images, settings.precision, normalized=True, score_threshold=score_threshold, **tiling
        )
        # Host copies now, in the model's thread: the encoding threads never touch the device.
        return [{key: _on_host(value) for key, value in result.items()} for result in results]

    return run_model


def _add_predict(app: FastAPI, model: MaskRCNN, settings: ServeSettings, batcher: Batcher) -> None:
    """POST /v1/predict: check the query, then answer (`_predict_answer`); a request the
    server's shutdown cuts off is answered 503 like any other error."""
    answer = _predict_answer(model, settings, batcher)

    @app.post("/v1/predict")
    async def predict(
        request: Request,
        score_threshold: float = Query(choices.PREDICT_SCORE_THRESHOLD, ge=0, le=1, allow_inf_nan=False),
        mask_format: Literal["rle", "polygons"] = "rle",
        tile: int = Query(0, ge=0),
        tile_overlap: int | None = Query(None, ge=0),
    ):
        started = time.perf_counter()
        problem = unknown_option_problem(request.query_params.keys()) or tile_problem(tile, tile_overlap)
        if problem:
            raise RequestError(400, "bad_request", problem)
        try:
            return await answer(request, started, score_threshold, mask_format, tile or None, tile_overlap)
        except asyncio.CancelledError:
            # uvicorn cancels the requests still running when --shutdown-seconds runs out; left
            # to propagate, that is its plain-text 500 and a traceback in the log.
            error = batcher.shutdown_cut_off()
            if error is None:
                raise
            task = asyncio.current_task()
            if hasattr(task, "uncancel"):  # handled: the task goes on to send the answer (3.11+ counts)
                task.uncancel()
            raise RequestError(503, "unavailable", str(error)) from None


def _predict_answer(model: MaskRCNN, settings: ServeSettings, batcher: Batcher):
    """The answer of a valid POST /v1/predict: read and decode the upload (in the thread pool),
    wait for the batcher, encode the detections (in the thread pool), with each part's timing."""

    def decode(data: bytes) -> torch.Tensor:
        pixels = decode_image(data, settings.max_image_pixels)
        try:
            return to_image_tensor(pixels, model.config.input, "upload")  # (C, H, W) in [0, 1]
        except ValueError as error:
            raise RequestError(400, "bad_request", one_line(error)) from None

    def encode(detections: dict, score_threshold: float, polygons: bool) -> list[dict]:
        return detections_json(model, keep_scoring(detections, score_threshold), polygons)

    async def answer(request, started, score_threshold, mask_format, tile, tile_overlap):
        data = await read_upload(request, settings.max_body_bytes)
        decode_start = time.perf_counter()
        image = await run_in_threadpool(decode, data)
        decoded = time.perf_counter()
        try:
            result = await batcher.submit(image, score_threshold, tile, tile_overlap)
        except BatcherStopped as error:
            raise RequestError(503, "unavailable", str(error)) from None
        except Exception as error:  # the model raised for this image's batch
            raise RequestError(500, "model_error", f"inference failed: {one_line(error)}") from None
        inferred = time.perf_counter()
        try:
            detections = await run_in_threadpool(
                encode, result.detections, score_threshold, mask_format == "polygons"
            )
        except Exception as error:
            raise RequestError(
                500, "internal", f"encoding the detections failed: {one_line(error)}"
            ) from None
        finished = time.perf_counter()
        height, width = image.shape[-2:]
        # A JSONResponse as it is: FastAPI's encoder would walk every number of every polygon again.
        return JSONResponse(
            {
                "image": {"width": int(width), "height": int(height)},
                "timing": {
                    "decode_ms": _ms(decoded - decode_start),
                    "queue_ms": round(result.queue_ms, 2),
                    "inference_ms": round(result.inference_ms, 2),
                    "encode_ms": _ms(finished - inferred),
                    "total_ms": _ms(finished - started),
                },
                "detections": detections,
            }
        )

    return answer


def _add_pages(app: FastAPI, model: MaskRCNN, settings: ServeSettings, metrics: ServerMetrics) -> None:
    """GET /v1/model, /healthz, /metrics, the web page and its static files."""
    description = model_json(model, settings.limits(), settings.device)

    @app.get("/v1/model")
    async def describe_model():
        return description

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus_metrics():
        content, content_type = metrics.render()
        return Response(content, headers={"Content-Type": content_type})

    index = settings.static_dir / "index.html"

    @app.get("/")
    async def page():
        if not index.is_file():
            raise RequestError(404, "not_found", f"the web page is not installed (no {index})")
        return FileResponse(index)

    if settings.static_dir.is_dir():
        app.mount("/static", StaticFiles(directory=settings.static_dir), name="static")


def _add_error_handlers(app: FastAPI, metrics: ServerMetrics) -> None:
    """Every error answer as JSON {"error": ...}, counted in maskrcnn_errors_total{kind}."""

    def error(status: int, kind: str, message: str, headers=None) -> JSONResponse:
        metrics.errors.labels(kind).inc()
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError):
        return error(exc.status, exc.kind, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid_value(request: Request, exc: RequestValidationError):
        return error(400, "bad_request", validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            message = f"not found: {request.url.path}"
        elif exc.status_code == 405:
            allowed = {key.lower(): value for key, value in (exc.headers or {}).items()}.get("allow", "")
            message = f"method {request.method} is not allowed on {request.url.path}; allowed: {allowed}"
        else:
            message = str(exc.detail)
        kind = ERROR_KINDS.get(exc.status_code, "bad_request" if exc.status_code < 500 else "internal")
        return error(exc.status_code, kind, message, exc.headers)


def validation_message(exc: RequestValidationError) -> str:
    """The first problem of a request FastAPI could not validate, as one line naming the field:
    "query parameter score_threshold '2': input should be less than or equal to 1"."""
    problems = exc.errors()
    if not problems:
        return "the request is not valid"
    first = problems[0]
    location = [str(part) for part in first.get("loc", ())]
    where = {"query": "query parameter", "body": "body field", "header": "header"}.get(
        location[0], location[0]
    )
    name = ".".join(location[1:])
    value = f" {first['input']!r}" if "input" in first and first["input"] is not None else ""
    message = first.get("msg", "invalid value")
    return f"{where} {name}{value}: {message[:1].lower()}{message[1:]}"


def _on_host(value):
    return value.cpu() if hasattr(value, "cpu") else value


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)
