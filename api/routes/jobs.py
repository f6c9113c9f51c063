"""`/v1/jobs`: submit, poll (optionally long-poll), cancel."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from api.deps import ServiceDep, SettingsDep
from api.payload import job_from_request
from shared.errors import InvalidInput
from shared.schemas import JobPublic

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

_SUBMIT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/JobCreate"}},
            "multipart/form-data": {"schema": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "image": {"type": "string", "format": "binary"},
                    "job": {"type": "string", "description": "JSON of the job without "
                            "`image`/`image_id`; omitted: automatic mode."},
                },
            }},
        },
    }
}


@router.post("", status_code=202, response_model=JobPublic, response_model_exclude_none=True,
             openapi_extra=_SUBMIT_BODY)
async def submit_job(request: Request, service: ServiceDep, settings: SettingsDep) -> Any:
    """Validate fully, store the image once, queue the job; answer 202 with its id."""
    spec, image_bytes, image_id = await job_from_request(request, settings)
    if image_bytes is not None:
        image = await service.store_image(image_bytes)
    else:
        assert image_id is not None
        found = await service.image_info(image_id)
        if found is None:
            raise InvalidInput(f"image_id {image_id} is unknown or expired; upload it again")
        image = found
    return await service.submit(spec, image)


@router.get("/{job_id}", response_model=JobPublic, response_model_exclude_none=True)
async def get_job(
    job_id: str,
    service: ServiceDep,
    wait: float = Query(0.0, ge=0.0, le=600.0,
                        description="Long-poll: seconds to wait for a terminal state."),
) -> Any:
    return await service.get(job_id, wait)


@router.delete("/{job_id}", response_model=JobPublic, response_model_exclude_none=True)
async def cancel_job(job_id: str, service: ServiceDep) -> Any:
    """Cancel a queued or running job; its result, if computed, is discarded."""
    return await service.cancel(job_id)

