"""Video jobs from Python: upload a video, track objects through it, read its frames
as they arrive. Works over a `Client` (its server, key, retries):

    from sam2fleet.client import Client
    from sam2fleet.video import Videos

    with Client() as client:
        videos = Videos(client)
        video = videos.upload("clip.mp4")
        job = videos.track(video.video_id, [{"obj_id": 1, "frame": 0, "points": [[320, 200]],
                                             "labels": [1]}])
        for frame in videos.frames(job.id):      # as SAM 2 tracks them
            masks = frame.masks()                # {obj_id: HxW bool}

`frames` reads the job's NDJSON stream and resumes where it stopped if the
connection drops; once the stream ends it checks the job and raises
`VideoJobFailed` unless it succeeded.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from sam2fleet.client import TERMINAL, ApiError, Client, WaitTimeout, decode_segmentation
from sam2fleet.client.models import VideoInfo
from sam2fleet.client.retry import RETRY_EXCEPTIONS

CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mov": "video/quicktime",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".zip": "application/zip",
}
VIDEO_EXTS = frozenset(CONTENT_TYPES)
STREAM_READ_TIMEOUT_S = 600.0  # one frame of a large video on a slow worker, at most


@dataclass(frozen=True)
class FrameObject:
    obj_id: int
    segmentation: dict[str, Any]
    area: int
    bbox: list[float]
    object_score: float

    def decode(self) -> np.ndarray:
        return decode_segmentation(self.segmentation)


@dataclass(frozen=True)
class Frame:
    frame: int
    objects: list[FrameObject]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Frame:
        return cls(int(d["frame"]), [FrameObject(**o) for o in d["objects"]])

    def masks(self) -> dict[int, np.ndarray]:
        return {o.obj_id: o.decode() for o in self.objects}


@dataclass(frozen=True)
class VideoJob:
    id: str
    status: str
    video_id: str
    progress: dict[str, int] | None
    result: dict[str, Any] | None
    error: dict[str, str] | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VideoJob:
        return cls(
            d["id"],
            d["status"],
            d.get("video_id", ""),
            d.get("progress"),
            d.get("result"),
            d.get("error"),
            dict(d),
        )

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


class VideoJobFailed(Exception):
    """A video job that ended `failed` or `cancelled`."""

    def __init__(self, job: VideoJob) -> None:
        err = job.error or {}
        super().__init__(f"video job {job.id} {job.status}: {err.get('message', '')}".rstrip(": "))
        self.job = job


class _FileBody:
    """A file sent as a request body, read from its start on every (re)try."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __iter__(self) -> Iterator[bytes]:
        with self.path.open("rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk


class Videos:
    def __init__(self, client: Client) -> None:
        self.client = client

    def upload(
        self, video: str | os.PathLike[str] | bytes, *, fps: float | None = None
    ) -> VideoInfo:
        """A video file (MP4/MOV, WebM/MKV, or a zip of numbered JPEG/PNG frames, whose
        frame rate `fps` gives). Content-addressed: uploading it again is cheap."""
        params = {"fps": fps} if fps else None
        if isinstance(video, bytes):
            body: Any = video
            headers = {"Content-Type": "application/octet-stream"}
        else:
            path = Path(video)
            body = _FileBody(path)
            headers = {
                "Content-Type": CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream"),
                "Content-Length": str(path.stat().st_size),
            }
        r = self.client.request("POST", "/v1/videos", content=body, headers=headers, params=params)
        return VideoInfo.from_dict(r.json())

    def track(
        self,
        video_id: str,
        prompts: Sequence[Mapping[str, Any]],
        *,
        start: int = 0,
        end: int | None = None,
        direction: str = "forward",
        stride: int = 1,
        model: str | None = None,
        idempotency_key: str | None = None,
    ) -> VideoJob:
        """Submit a video job: `prompts` as the API takes them ({obj_id, frame, points
        + labels | box | mask})."""
        body: dict[str, Any] = {
            "mode": "video",
            "video_id": video_id,
            "prompts": [dict(p) for p in prompts],
            "video": {"start": start, "end": end, "direction": direction, "stride": stride},
        }
        if model:
            body["model"] = model
        r = self.client.request(
            "POST",
            "/v1/jobs",
            json=body,
            retry_conflict=True,
            headers={"Idempotency-Key": idempotency_key or uuid.uuid4().hex},
        )
        return VideoJob.from_dict(r.json())

    def get(self, job_id: str, wait: float = 0.0) -> VideoJob:
        r = self.client.request(
            "GET",
            f"/v1/jobs/{job_id}",
            params={"wait": wait} if wait else None,
            timeout=self.client.timeout + wait,
        )
        return VideoJob.from_dict(r.json())

    def wait(self, job_id: str, timeout: float | None = None) -> VideoJob:
        """Until the job ends (`WaitTimeout` after `timeout` seconds; None: never)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 30.0 if deadline is None else min(30.0, deadline - time.monotonic())
            job = self.get(job_id, wait=max(left, 0.0))
            if job.done:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(job, timeout or 0.0)  # type: ignore[arg-type]

    def page(self, job_id: str, start: int = 0, limit: int = 100) -> tuple[list[Frame], int | None]:
        """Frame records written so far among `limit` frames from frame `start`; and
        where the next page starts (None at the end)."""
        r = self.client.request(
            "GET", f"/v1/jobs/{job_id}/frames", params={"start": start, "limit": limit}
        )
        body = r.json()
        return [Frame.from_dict(f) for f in body["frames"]], body["next_start"]

    def frames(self, job_id: str) -> Iterator[Frame]:
        """Every frame record, in tracking order, each as soon as it is written."""
        received = 0
        attempt = 0
        while True:
            try:
                for record in self._stream(job_id, received):
                    received += 1
                    attempt = 0
                    yield Frame.from_dict(record)
                break  # the stream ended: so did the job
            except RETRY_EXCEPTIONS:
                if attempt >= self.client.retry.max_retries:
                    raise
                time.sleep(self.client.retry.delay(attempt, None))
                attempt += 1
        job = self.wait(job_id)  # ended with the stream: one read, or a short wait
        if job.status != "succeeded":
            raise VideoJobFailed(job)

    def _stream(self, job_id: str, skip: int) -> Iterator[dict[str, Any]]:
        timeout = httpx.Timeout(self.client.timeout, read=STREAM_READ_TIMEOUT_S)
        url = f"/v1/jobs/{job_id}/frames/stream"
        with self.client._http.stream("GET", url, params={"skip": skip}, timeout=timeout) as r:
            if r.status_code >= 400:
                r.read()
                raise ApiError.from_response(r)
            for line in r.iter_lines():
                if line:
                    yield json.loads(line)

    def cancel(self, job_id: str) -> VideoJob:
        return VideoJob.from_dict(self.client.request("DELETE", f"/v1/jobs/{job_id}").json())
