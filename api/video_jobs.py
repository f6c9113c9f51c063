"""Video jobs on the gateway: submit (`POST /v1/jobs` with `"mode": "video"`), and
the frame records a running or finished job has written. No HTTP shapes here.

A video job is validated fully before it is queued: its video is known and alive,
every prompt lies on a frame of the range and inside the frame, no object is
prompted twice on one frame, and its predicted device memory is within
`max_video_job_bytes`. Its Celery message carries the job's own time limits
(`video_time_limit_s`): a video may track for hours.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from pycocotools import mask as mask_utils

from sam2fleet.api.payload import parse_json
from sam2fleet.api.prompts import check_prompts
from sam2fleet.api.service import JobService
from sam2fleet.api.videos import VideoStore
from sam2fleet.shared.errors import (
    InvalidInput,
    InvalidPrompt,
    NotFound,
    VideoTooLarge,
)
from sam2fleet.shared.images import ProbedImage
from sam2fleet.shared.models import MODELS
from sam2fleet.shared.records import Heartbeat, JobRecord
from sam2fleet.shared.schemas import JobStatus, VideoInfo
from sam2fleet.shared.settings import Settings
from sam2fleet.shared.video_memory import estimate_video_bytes
from sam2fleet.shared.video_records import VideoKeys
from sam2fleet.shared.video_schemas import VideoJobCreate, VideoJobSpec, frames_written

STREAM_POLL_S = 0.25  # how often a frame stream looks for new records
STREAM_BATCH = 64


def is_video_job(body: bytes) -> bool:
    """A JSON submit body asking for mode "video" (anything else: the image path)."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(value, dict) and value.get("mode") == "video"


async def submit(
    body: bytes,
    service: JobService,
    videos: VideoStore,
    owner: str,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    settings = service.settings
    create = parse_json(VideoJobCreate, body)
    model = create.model or settings.model
    if model not in MODELS:
        raise InvalidInput(f"unknown model {model!r}; served: {', '.join(sorted(MODELS))}")
    stored = await videos.get(owner, create.video_id)
    if stored is None:
        raise InvalidInput(f"video_id {create.video_id} is unknown or expired; upload it again")
    info = stored.info
    spec = resolve(create, model, info)
    check_video_prompts(spec, info, settings)
    check_memory(spec, info, settings, model)
    job_id = uuid.uuid4().hex

    async def queue_it(_: list[Heartbeat]) -> dict[str, Any]:
        limit = settings.video_time_limit_s
        return await service.queue_record(
            video_record(job_id, spec, info, owner, model),
            service.keys.queue(model),  # never a worker's private queue: no image affinity
            soft_time_limit=limit,
            time_limit=limit + 60,
        )

    # The same admission as image jobs: the key, a warm worker, room reserved atomically.
    fingerprint = f"video:{info.video_id}:{spec.model_dump_json()}"
    return await service.admit(owner, model, job_id, idempotency_key, fingerprint, 0, queue_it)


def resolve(create: VideoJobCreate, model: str, info: VideoInfo) -> VideoJobSpec:
    """The spec as stored: the model named, the range's end made explicit."""
    spec = VideoJobSpec.model_validate(create.model_dump(exclude={"video_id"}))
    end = info.frames - 1 if spec.video.end is None else spec.video.end
    video = spec.video.model_copy(update={"end": end})
    return spec.model_copy(update={"model": model, "video": video})


def check_video_prompts(spec: VideoJobSpec, info: VideoInfo, settings: Settings) -> None:
    """What needs the video: the range, frames, geometry, masks, object count."""
    start, end = spec.video.start, spec.video.end
    assert end is not None  # resolved
    if not start <= end < info.frames:
        raise InvalidInput(
            f"frame range {start}..{end} is not inside the video's frames 0..{info.frames - 1}"
        )
    objects = spec.obj_ids()
    if len(objects) > settings.max_objects:
        raise InvalidPrompt(f"{len(objects)} objects; at most {settings.max_objects} per job")
    for i, p in enumerate(spec.prompts):
        if not start <= p.frame <= end:
            raise InvalidPrompt(
                f"prompts[{i}] is on frame {p.frame}, outside the tracked range {start}..{end}"
            )
        if p.mask is not None:
            check_mask(i, p.mask.size, p.mask.counts, info)
    first = min(p.frame for p in spec.prompts)
    if spec.video.direction == "backward" and first == 0:
        raise InvalidPrompt(
            "direction backward from frame 0 tracks nothing (SAM 2 tracks back from the "
            "earliest prompted frame); use forward"
        )
    # Points and boxes: the image rules, with every prompt counted as an object.
    frame = ProbedImage(info.video_id, "video", info.width, info.height)
    check_prompts(
        list(spec.prompts),
        frame,
        settings.model_copy(update={"max_objects": len(spec.prompts)}),
    )


def check_mask(index: int, size: list[int], counts: str, info: VideoInfo) -> None:
    if size != [info.height, info.width]:
        raise InvalidPrompt(
            f"prompts[{index}] mask is {size[0]}x{size[1]} (height x width); the video is "
            f"{info.height}x{info.width}"
        )
    rle = {"size": size, "counts": counts.encode()}
    try:
        # pycocotools reads any string without complaint: a string that does not come
        # back the same when its mask is encoded again is not an RLE of that size.
        decoded = mask_utils.decode(rle)
        valid = mask_utils.encode(decoded)["counts"] == rle["counts"]
    except Exception:  # pycocotools raises bare errors on some malformed strings
        valid = False
    if not valid:
        raise InvalidPrompt(
            f"prompts[{index}] mask is not a valid COCO RLE of a {size[0]}x{size[1]} mask "
            "(compressed counts, as pycocotools writes them)"
        )
    if not decoded.any():
        raise InvalidPrompt(f"prompts[{index}] mask is empty")


def check_memory(spec: VideoJobSpec, info: VideoInfo, settings: Settings, model: str) -> None:
    limit = settings.max_video_job_bytes
    if limit <= 0:
        return
    image_size = settings.model_image_size or 1024
    need = estimate_video_bytes(model, image_size, info.width, info.height, spec)
    if need > limit:
        raise VideoTooLarge(
            f"the job is predicted to need {need / 2**30:.2f} GiB of device memory "
            f"({len(spec.obj_ids())} objects at {info.width}x{info.height}); the limit is "
            f"{limit / 2**30:.2f} GiB (SAM2FLEET_MAX_VIDEO_JOB_BYTES)"
        )


def video_record(
    job_id: str, spec: VideoJobSpec, info: VideoInfo, owner: str, model: str
) -> JobRecord:
    assert spec.video.end is not None
    return JobRecord(
        id=job_id,
        status=JobStatus.queued,
        model=model,
        mode="video",
        image_id=info.video_id,
        owner=owner,
        created_at=time.time(),
        spec_json=spec.model_dump_json(),
        frames_done=0,
        frames_total=len(frames_written(spec, spec.video.end + 1)),
    )


# --- frame records ----------------------------------------------------------------


async def video_job(service: JobService, job_id: str, owner: str) -> tuple[JobRecord, list[int]]:
    """The job (404 for another owner's) and the frames it writes, in tracking order."""
    record = JobRecord.from_redis(await service.redis.hgetall(service.keys.job(job_id)))
    if record is None or record.owner != owner:
        raise NotFound(f"no job {job_id} (unknown or expired)")
    if record.mode != "video":
        raise InvalidInput(f"job {job_id} is a {record.mode} job; only video jobs have frames")
    spec = VideoJobSpec.model_validate_json(record.spec_json)
    assert spec.video.end is not None
    return record, frames_written(spec, spec.video.end + 1)


async def frame_page(service: JobService, job_id: str, owner: str, start: int, limit: int) -> str:
    """JSON of the records among the next `limit` frames from `start` (frame order)
    that are written so far, as stored (no re-encoding)."""
    _, order = await video_job(service, job_id, owner)
    frames = sorted(order)
    first = bisect.bisect_left(frames, start)
    window = frames[first : first + limit]
    found = (
        await service.redis.hmget(VideoKeys(service.settings.key_prefix).frames(job_id), window)
        if window
        else []
    )
    records = [v.decode() for v in found if v is not None]
    more = first + limit < len(frames)
    next_start = frames[first + limit] if more else None
    return f'{{"frames":[{",".join(records)}],"next_start":{json.dumps(next_start)}}}'


async def frame_stream(
    service: JobService, job_id: str, owner: str, skip: int
) -> AsyncIterator[bytes]:
    """NDJSON: the job's frame records in the order they are tracked, each as soon as
    it is written; ends once the job has ended (so its result is there to read) and
    its records are all sent."""
    _, order = await video_job(service, job_id, owner)
    key = VideoKeys(service.settings.key_prefix).frames(job_id)
    position = skip

    async def stream() -> AsyncIterator[bytes]:
        nonlocal position
        while True:
            batch = order[position : position + STREAM_BATCH]
            values = await service.redis.hmget(key, batch) if batch else []
            sent = 0
            for value in values:
                if value is None:
                    break
                yield value + b"\n"
                sent += 1
            position += sent
            if sent:
                continue
            status = await service.redis.hget(service.keys.job(job_id), "status")
            if status is None or JobStatus(status.decode()).terminal:
                # A record written just before the terminal state is still sent.
                if position < len(order) and await service.redis.hexists(key, order[position]):
                    continue
                return
            await asyncio.sleep(STREAM_POLL_S)

    return stream()
