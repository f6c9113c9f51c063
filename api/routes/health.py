"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from sam2fleet.api.deps import ServiceDep
from sam2fleet.api.metrics import set_fleet_gauges
from sam2fleet.api.openapi import RETRY_AFTER
from sam2fleet.shared.models import MODELS
from sam2fleet.shared.schemas import Readiness

router = APIRouter(tags=["health"])


@router.get("/livez")
async def livez() -> dict[str, str]:
    """The process is up; says nothing about Redis or workers."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    response_model_exclude_none=True,
    responses={
        503: {
            "model": Readiness,
            "description": "Redis does not answer, or no warm worker: `reason` says which.",
            "headers": RETRY_AFTER,
        }
    },
)
async def readyz(service: ServiceDep, response: Response) -> Readiness:
    """Ready: Redis answers and a worker finished its warm-up inference recently."""
    try:
        await service.redis.ping()
        workers = await service.warm_workers()
    except (RedisError, OSError) as exc:
        response.status_code, response.headers["Retry-After"] = 503, "2"
        return Readiness(
            status="unavailable",
            redis=False,
            workers=0,
            reason=f"redis unreachable: {type(exc).__name__}",
        )
    if not workers:
        response.status_code, response.headers["Retry-After"] = 503, "5"
        return Readiness(
            status="unavailable",
            redis=True,
            workers=0,
            reason="no warm worker has reported within the heartbeat window",
        )
    models = sorted({w.model for w in workers})
    return Readiness(status="ok", redis=True, workers=len(workers), models=models)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"description": "Prometheus text exposition format."}},
)
async def metrics(service: ServiceDep) -> Response:
    try:
        warm = await service.warm_workers()
        depths = {model: await service.queue_depth(model) for model in MODELS}
    except (RedisError, OSError):
        set_fleet_gauges(None, [])
    else:
        set_fleet_gauges(depths, warm)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
