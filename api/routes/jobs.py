"""`/v1/jobs`: submit, poll (optionally long-poll), cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request

from sam2fleet.api import video_jobs
from sam2fleet.api.auth import Owner, check_rate
from sam2fleet.api.deps import ServiceDep, SettingsDep
from sam2fleet.api.openapi import answers
from sam2fleet.api.payload import job_from_request
from sam2fleet.api.routes.videos import video_store
from sam2fleet.shared.errors import InvalidInput
from sam2fleet.shared.schemas import JobPublic

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

_SUBMIT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/JobCreate"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        "job": {
                            "type": "string",
                            "description": "JSON of the job without "
                            "`image`/`image_id`; omitted: automatic mode.",
                        },
                    },
                }
            },
        },
    }
}


@router.post(
    "",
    status_code=202,
    response_model=JobPublic,
    response_model_exclude_none=True,
    openapi_extra=_SUBMIT_BODY,
    responses=answers(400, 401, 409, 413, 415, 422, 429, 503),
)
async def submit_job(
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    owner: Owner,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=255,
            description="Same key and body again: the same job, run once. Another body: 409.",
        ),
    ] = None,
) -> Any:
    """Validate fully, admit, store the image once, queue the job; 202 with its id."""
    await check_rate(request, owner)
    if request.headers.get("content-type", "").startswith("application/json"):
        body = await request.body()
        if video_jobs.is_video_job(body):  # api/video_jobs.py
            return await video_jobs.submit(
                body, service, video_store(request), owner, idempotency_key
            )
    spec, image_bytes, image_id = await job_from_request(request, settings)
    if image_bytes is not None:
        image = service.probe(image_bytes)  # stored only once the job is admitted
    else:
        assert image_id is not None
        found = await service.image_info(image_id, owner)
        if found is None:
            raise InvalidInput(f"image_id {image_id} is unknown or expired; upload it again")
        image = found
    return await service.submit(spec, image, owner, idempotency_key, data=image_bytes)


@router.get(
    "/{job_id}",
    response_model=JobPublic,
    response_model_exclude_none=True,
    responses=answers(401, 404, 422, 503),
)
async def get_job(
    job_id: str,
    service: ServiceDep,
    owner: Owner,
    wait: float = Query(
        0.0, ge=0.0, le=600.0, description="Long-poll: seconds to wait for a terminal state."
    ),
) -> Any:
    return await service.get(job_id, owner, wait)


@router.delete(
    "/{job_id}",
    response_model=JobPublic,
    response_model_exclude_none=True,
    responses=answers(401, 404, 409, 503),
)
async def cancel_job(job_id: str, service: ServiceDep, owner: Owner) -> Any:
    """Cancel a queued job (it never runs) or a running one (it stops at the next
    safe point between stages); 409 once the job has ended."""
    return await service.cancel(job_id, owner)
