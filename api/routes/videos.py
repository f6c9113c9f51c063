"""`/v1/videos`: upload a video once, track objects through it in video jobs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from sam2fleet.api.auth import Owner, check_rate
from sam2fleet.api.deps import SettingsDep
from sam2fleet.api.openapi import answers, file_upload
from sam2fleet.api.videos import VideoStore, read_upload
from sam2fleet.shared.errors import NotFound
from sam2fleet.shared.schemas import VideoInfo

router = APIRouter(prefix="/v1/videos", tags=["videos"])


def video_store(request: Request) -> VideoStore:
    return VideoStore(request.app.state.settings, request.app.state.service.redis)


VideosDep = Annotated[VideoStore, Depends(video_store)]

_UPLOAD_BODY = file_upload("video", "video/*", "application/zip")


@router.post(
    "",
    status_code=201,
    response_model=VideoInfo,
    openapi_extra=_UPLOAD_BODY,
    responses=answers(400, 401, 413, 415, 422, 429, 503),
)
async def upload_video(
    request: Request,
    videos: VideosDep,
    settings: SettingsDep,
    owner: Owner,
    fps: float = Query(
        30.0, gt=0, le=1000, description="Frame rate of a zip of frames (files carry none)."
    ),
) -> Any:
    """MP4/MOV (H.264, H.265, AV1), WebM/MKV (VP8, VP9, AV1), or a zip of numbered
    JPEG/PNG frames: the raw file as the body, or a multipart part named `video`."""
    await check_rate(request, owner)
    upload = await read_upload(request, settings)
    try:
        return await videos.store(upload, owner, fps)
    finally:
        upload.close()


@router.get("/{video_id}", response_model=VideoInfo, responses=answers(401, 404, 503))
async def get_video(video_id: str, videos: VideosDep, owner: Owner) -> Any:
    stored = await videos.get(owner, video_id)
    if stored is None:
        raise NotFound(f"no video {video_id} (unknown or expired)")
    return stored.info
