"""The gateway's Prometheus metrics: requests, latency, payloads, queue depth, workers.

`MetricsMiddleware` (pure ASGI, outermost) labels each request by its route
*template* (`/v1/jobs/{job_id}`, never the raw path; `unmatched` for any other) and
its method (`other` for any but the usual seven), and reads `error.type` from
error answers, so errors raised anywhere (handlers, other middleware) are counted
the same way. Queue depth and ready workers are read from Redis when `/metrics` is
scraped. The API runs as one uvicorn process, so the default registry is the whole
story; several uvicorn workers would need prometheus-client's multiprocess mode.
"""

from __future__ import annotations

import json
import re
import time

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sam2fleet.shared.errors import error_types
from sam2fleet.shared.logs import JOB_ID
from sam2fleet.shared.metrics import LATENCY_BUCKETS, MODES, SIZE_BUCKETS
from sam2fleet.shared.models import MODELS
from sam2fleet.shared.records import Heartbeat

REQUESTS = Counter(
    "sam2fleet_http_requests_total",
    "HTTP requests answered, by route template and status.",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "sam2fleet_http_request_duration_seconds",
    "Time from request start to the last body byte sent (long polls included).",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
REQUEST_BYTES = Histogram(
    "sam2fleet_http_request_size_bytes",
    "Request body bytes received.",
    ["route", "method"],
    buckets=SIZE_BUCKETS,
)
ERRORS = Counter(
    "sam2fleet_http_errors_total",
    "Error answers by `error.type` of the body.",
    ["route", "status", "error_type"],
)
SUBMITTED = Counter(
    "sam2fleet_jobs_submitted_total",
    "Jobs accepted and queued (202).",
    ["model", "mode"],
)
QUEUE_DEPTH = Gauge(
    "sam2fleet_queue_depth",
    "Jobs waiting in the model's queue (not yet taken by a worker).",
    ["model"],
)
WORKERS_READY = Gauge(
    "sam2fleet_workers_ready",
    "Warm workers heard from within the heartbeat window, as the API sees them in Redis.",
    ["model"],
)
REDIS_UP = Gauge("sam2fleet_redis_up", "1 when Redis answered the last /metrics scrape.")

for _model in MODELS:
    for _mode in MODES:
        SUBMITTED.labels(_model, _mode)

_JOB_PATH = re.compile(r"^/v1/jobs/([0-9a-f]{32})$")
# Every label value comes from a small known set: HTTP servers accept any token as a
# method, and a label per token would let any client mint series without end.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
UNMATCHED_ROUTE = "unmatched"
_ERROR_BODY_LIMIT = 16 * 1024
# The error tree's types, and the one main.py gives a status Starlette raised that
# has no type of its own.
_ERROR_TYPES = error_types() | {"http_error"}


def job_submitted(job_id: str, model: str, mode: str) -> None:
    """Count an accepted job and tag the request's remaining log lines with its id."""
    SUBMITTED.labels(model, mode).inc()
    JOB_ID.set(job_id)


def set_fleet_gauges(queue_depths: dict[str, int] | None, warm: list[Heartbeat]) -> None:
    """Queue depth and ready workers per model as read from Redis at scrape time;
    `queue_depths` None: Redis did not answer."""
    if queue_depths is None:
        REDIS_UP.set(0)
        return
    for model in MODELS:
        QUEUE_DEPTH.labels(model).set(queue_depths.get(model, 0))
        WORKERS_READY.labels(model).set(sum(1 for w in warm if w.model == model))
    REDIS_UP.set(1)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        received = 0
        status = 500  # an exception that escapes every handler ends as a 500
        error_body: list[bytes] | None = None
        match = _JOB_PATH.match(scope.get("path", ""))
        token = JOB_ID.set(match.group(1) if match else None)

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def watching_send(message: Message) -> None:
            nonlocal status, error_body
            if message["type"] == "http.response.start":
                status = message["status"]
                error_body = [] if status >= 400 else None
            elif message["type"] == "http.response.body" and error_body is not None:
                if sum(map(len, error_body)) < _ERROR_BODY_LIMIT:
                    error_body.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        finally:
            route = _route_template(scope)
            method = scope.get("method", "GET")
            method = method if method in METHODS else OTHER_METHOD
            REQUESTS.labels(route, method, str(status)).inc()
            REQUEST_SECONDS.labels(route, method).observe(time.perf_counter() - started)
            REQUEST_BYTES.labels(route, method).observe(received)
            if status >= 400:
                ERRORS.labels(route, str(status), _error_type(error_body, status)).inc()
            JOB_ID.reset(token)


def _route_template(scope: Scope) -> str:
    # The router records the matched route in the (shared) scope; an unknown path
    # has none and is counted as one bounded label value.
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


def _error_type(chunks: list[bytes] | None, status: int) -> str:
    try:
        error = json.loads(b"".join(chunks or []))["error"]["type"]
    except (ValueError, KeyError, TypeError):
        return f"http_{status}"
    return error if isinstance(error, str) and error in _ERROR_TYPES else f"http_{status}"
