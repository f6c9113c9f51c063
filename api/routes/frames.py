"""`/v1/jobs/{id}/frames`: a video job's frame records, while it runs and after."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from sam2fleet.api import video_jobs
from sam2fleet.api.auth import Owner
from sam2fleet.api.deps import ServiceDep
from sam2fleet.api.openapi import answers
from sam2fleet.shared.video_schemas import FramePage

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get(
    "/{job_id}/frames", responses={**answers(401, 404, 422, 503), 200: {"model": FramePage}}
)
async def get_frames(
    job_id: str,
    service: ServiceDep,
    owner: Owner,
    start: int = Query(0, ge=0, description="First frame number of the page."),
    limit: int = Query(100, ge=1, le=1000, description="Frames of the range to look at."),
) -> Any:
    """Records of the frames written so far among the next `limit` frames the job
    writes from frame `start` on, in frame order; `next_start` pages on."""
    page = await video_jobs.frame_page(service, job_id, owner, start, limit)
    return Response(page, media_type="application/json")


@router.get(
    "/{job_id}/frames/stream",
    responses={**answers(401, 404, 422, 503), 200: {"content": {"application/x-ndjson": {}}}},
    response_class=StreamingResponse,
)
async def stream_frames(
    job_id: str,
    service: ServiceDep,
    owner: Owner,
    skip: int = Query(0, ge=0, description="Records already received (to resume)."),
) -> Any:
    """One frame record per line (NDJSON) in the order frames are tracked, each sent
    as soon as it is written; the stream ends when the job has ended."""
    lines = await video_jobs.frame_stream(service, job_id, owner, skip)
    return StreamingResponse(lines, media_type="application/x-ndjson")
