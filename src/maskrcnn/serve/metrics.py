"""The server's Prometheus metrics, on a registry of its own, and the middleware that counts requests.

A registry per app (not prometheus_client's global one): two apps in one process (tests, an
embedding application) each count their own requests, and GET /metrics shows only the server's.
"""

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# Request paths that get a label of their own; anything else is counted as "other", so that
# a scan of random URLs cannot grow the number of time series without bound.
ENDPOINTS = ("/", "/v1/predict", "/v1/model", "/healthz", "/metrics")
# Seconds: from a cached /healthz (well under a millisecond) to a tiled large image (minutes).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class ServerMetrics:
    """The counters, histograms and gauges of one app.

    requests: maskrcnn_requests_total{endpoint, status}; errors: maskrcnn_errors_total{kind}
    (bad_request, too_large, not_found, method_not_allowed, model_error, internal, unavailable);
    latency: maskrcnn_request_latency_seconds{endpoint}; batch_size: maskrcnn_batch_size, one
    observation per forward pass (buckets 1 .. max_batch); queue_depth: images waiting for the
    model; in_progress: maskrcnn_requests_in_progress{endpoint}, requests being answered.
    """

    def __init__(self, max_batch: int):
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "maskrcnn_requests", "HTTP requests answered", ["endpoint", "status"], registry=registry
        )
        self.errors = Counter("maskrcnn_errors", "Error answers, by kind", ["kind"], registry=registry)
        self.latency = Histogram(
            "maskrcnn_request_latency_seconds",
            "Time from a request's arrival to its answer",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "maskrcnn_batch_size",
            "Images per forward pass",
            buckets=tuple(range(1, max_batch + 1)),
            registry=registry,
        )
        self.queue_depth = Gauge("maskrcnn_queue_depth", "Images waiting for the model", registry=registry)
        self.in_progress = Gauge(
            "maskrcnn_requests_in_progress", "Requests being answered", ["endpoint"], registry=registry
        )

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def endpoint_label(path: str) -> str:
    """The `endpoint` label of a request path: itself if known, /static for the page's files."""
    if path in ENDPOINTS:
        return path
    return "/static" if path.startswith("/static/") else "other"


class RequestMetricsMiddleware:
    """Pure ASGI middleware: counts every HTTP answer by endpoint and status, and times it.

    Pure ASGI (not Starlette's BaseHTTPMiddleware) so that request bodies stream through to the
    endpoint untouched: the size limit is enforced while they are read.
    """

    def __init__(self, app, metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = endpoint_label(scope["path"])
        status = {"code": 500}  # what a crash before the answer's start counts as

        async def send_counting(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        started = time.perf_counter()
        self.metrics.in_progress.labels(endpoint).inc()
        try:
            await self.app(scope, receive, send_counting)
        finally:
            self.metrics.in_progress.labels(endpoint).dec()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
