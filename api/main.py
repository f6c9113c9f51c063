"""The gateway: a thin FastAPI app that validates, stores and queues.

Run with `uvicorn sam2fleet.api.main:app` (or `sam2fleet api`). It never imports torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aredis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from sam2fleet.api import openapi
from sam2fleet.api.limits import BodyLimitMiddleware
from sam2fleet.api.metrics import MetricsMiddleware
from sam2fleet.api.ratelimit import RateLimiter
from sam2fleet.api.routes import (
    compat,
    frames,
    health,
    images,
    jobs,
    models,
    playground,
    videos,
)
from sam2fleet.api.service import JobService
from sam2fleet.shared import redis_clients
from sam2fleet.shared.errors import BadRequest, MethodNotAllowed, NotFound, Sam2FleetError
from sam2fleet.shared.queue import make_celery
from sam2fleet.shared.settings import Settings, get_settings

log = logging.getLogger("sam2fleet.api")
FOLLOW_PRIMARY_S = 1.0
_ROUTERS = (jobs.router, images.router, models.router, health.router, compat.router)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Short timeouts: with Redis down a submit must answer 503 in a second or
        # two, never hang.
        client = redis_clients.async_client(
            settings.redis_url,
            socket_connect_timeout=1,
            socket_timeout=2,
            health_check_interval=15,
            # A pooled connection from before a Redis restart fails once on use: retry
            # on a fresh one, briefly, so a restart costs clients nothing.
            retry=Retry(ExponentialBackoff(cap=0.25, base=0.05), 2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        # Refused before serving: a cluster cannot hold the broker's queues.
        try:
            await redis_clients.refuse_cluster_async(client)
        except redis_clients.ClusterRefused:
            await redis_clients.close_async(client)
            raise
        celery = make_celery(settings)
        app.state.settings = settings
        app.state.service = JobService(settings, client, celery)
        app.state.rate_limiter = RateLimiter(settings, client)
        app.state.service.done.start()
        follower = None
        if redis_clients.parse(settings.redis_url).is_sentinel:
            follower = asyncio.create_task(_follow_primary(client))
        yield
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        await app.state.service.done.stop()
        await redis_clients.close_async(client)
        celery.close()

    app = FastAPI(
        title="sam2fleet",
        summary="Meta's SAM 2 as a queued GPU worker fleet.",
        version="0.1.0",
        lifespan=lifespan,
    )
    for router in _ROUTERS:
        app.include_router(router)
    app.include_router(videos.router)
    app.include_router(frames.router)
    app.include_router(playground.router)
    playground.mount(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        # Multipart framing on top of the file: a few KiB are plenty.
        path_limits={
            videos.router.prefix: (
                settings.max_video_bytes + 64 * 1024,
                "SAM2FLEET_MAX_VIDEO_BYTES",
            )
        },
    )
    app.add_middleware(MetricsMiddleware)  # added last: outermost, sees every answer
    app.add_exception_handler(Sam2FleetError, _fleet_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RedisError, _redis_error)
    app.add_exception_handler(Exception, _internal_error)
    app.openapi = lambda: openapi.build(app)  # type: ignore[method-assign]
    return app


async def _follow_primary(client: aredis.Redis) -> None:
    """With Sentinel: once a second, drop connections to a primary the sentinels have
    replaced (shared/redis_clients.py, `follow_primary`)."""
    while True:
        await asyncio.sleep(FOLLOW_PRIMARY_S)
        try:
            await redis_clients.follow_primary_async(client)
        except (RedisError, OSError) as exc:
            log.debug("could not ask the sentinels: %s", type(exc).__name__)


def _error(status: int, type_: str, message: str, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse(
        {"error": {"type": type_, "message": message}}, status_code=status, headers=headers
    )


async def _fleet_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Sam2FleetError)
    return _error(exc.status, exc.type, exc.message, exc.retry_after)


_HTTP_TYPES = {e.status: e.type for e in (NotFound, MethodNotAllowed, BadRequest)}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette's own answers (unknown route, wrong method) in the project's error shape.
    assert isinstance(exc, StarletteHTTPException)
    response = _error(
        exc.status_code, _HTTP_TYPES.get(exc.status_code, "http_error"), str(exc.detail)
    )
    if exc.headers:
        response.headers.update(exc.headers)
    if exc.status_code == 405:
        # Starlette names the methods of the first route on the path only; a path
        # served by several routes (GET and DELETE /v1/jobs/{id}) allows them all.
        response.headers["Allow"] = ", ".join(_methods_on(request))
    return response


def _methods_on(request: Request) -> list[str]:
    methods: set[str] = set()
    for router in _ROUTERS:
        for route in router.routes:
            if isinstance(route, Route) and route.path_regex.match(request.url.path):
                methods |= route.methods or set()
    return sorted(methods)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
    return _error(422, "invalid_input", "; ".join(parts))


async def _redis_error(request: Request, exc: Exception) -> JSONResponse:
    # The exception text may carry the Redis URL (with its password): name the type only.
    log.warning("redis error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return _error(503, "unavailable", f"Redis is unavailable ({type(exc).__name__})", 2)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error(500, "internal", "internal error; it has been logged")


app = create_app()
