"""Video uploads: read the body to a spooled file (hashing and counting as it
arrives), probe it in a thread, store it in Redis in chunks. No HTTP shapes here.

Storage follows shared/video_records.py: chunks first, the info hash last, so a
worker never sees half an upload; the same file uploaded again by the same owner
only has its TTL renewed.
"""

from __future__ import annotations

import hashlib
import tempfile
from functools import partial
from typing import IO

import anyio
import redis.asyncio as aredis
from starlette.datastructures import UploadFile
from starlette.requests import Request

from sam2fleet.api.payload import open_form
from sam2fleet.shared.errors import InvalidInput, UnsupportedMediaType, VideoTooLarge
from sam2fleet.shared.schemas import VideoInfo
from sam2fleet.shared.settings import Settings
from sam2fleet.shared.video_probe import VideoLimits, probe_video
from sam2fleet.shared.video_records import CHUNK_BYTES, StoredVideo, VideoKeys

SPOOL_BYTES = 8 << 20  # uploads beyond this go to a temporary file, not memory
WRITE_BATCH = 16  # chunks per Redis round trip


class Upload:
    """An uploaded file on the gateway: a spooled temporary file, its size and sha256."""

    def __init__(self, max_bytes: int) -> None:
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
        self.size = 0
        self.max_bytes = max_bytes
        self._hash = hashlib.sha256()

    def add(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise VideoTooLarge(
                f"the video is over the {self.max_bytes}-byte limit (SAM2FLEET_MAX_VIDEO_BYTES)"
            )
        self._hash.update(data)
        self.file.write(data)

    @property
    def video_id(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        self.file.close()


async def read_upload(request: Request, settings: Settings) -> Upload:
    """A multipart `video` part, or the raw file as the body."""
    upload = Upload(settings.max_video_bytes)
    try:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            async with open_form(request, settings, max_fields=1) as form:
                part = form.get("video")
                if not isinstance(part, UploadFile):
                    raise InvalidInput("multipart uploads need a file part named `video`")
                while data := await part.read(CHUNK_BYTES):
                    upload.add(data)
        elif content_type.startswith(("application/json", "text/")):
            raise UnsupportedMediaType(
                "send the video as the raw body (e.g. content-type video/mp4) or as a "
                "multipart file part named `video`; base64 JSON is not taken for videos"
            )
        else:
            async for data in request.stream():
                upload.add(data)
    except BaseException:
        upload.close()
        raise
    return upload


class VideoStore:
    def __init__(self, settings: Settings, client: aredis.Redis) -> None:
        self.settings = settings
        self.redis = client
        self.keys = VideoKeys(settings.key_prefix)

    async def store(self, upload: Upload, owner: str, zip_fps: float) -> VideoInfo:
        """Probe and keep the upload; an upload already stored only has its TTL renewed."""
        known = await self.get(owner, upload.video_id)
        if known is not None:
            return known.info
        info = await anyio.to_thread.run_sync(
            partial(
                probe_video,
                upload.file,
                upload.video_id,
                upload.size,
                VideoLimits.of(self.settings),
                zip_fps,
            )
        )
        stored = StoredVideo(info, CHUNK_BYTES, -(-upload.size // CHUNK_BYTES))
        ttl = self.settings.video_ttl_s
        upload.file.seek(0)
        chunks = self.keys.chunks(owner, info.video_id, stored.chunks)
        for first in range(0, len(chunks), WRITE_BATCH):
            pipe = self.redis.pipeline(transaction=False)
            for key in chunks[first : first + WRITE_BATCH]:
                pipe.set(key, upload.file.read(CHUNK_BYTES), ex=ttl)
            await pipe.execute()
        key = self.keys.video(owner, info.video_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping=stored.to_redis())
        pipe.expire(key, ttl)
        await pipe.execute()
        return info

    async def get(self, owner: str, video_id: str) -> StoredVideo | None:
        """The stored video, its TTL renewed (a job is about to use it); None if gone."""
        key = self.keys.video(owner, video_id)
        stored = StoredVideo.from_redis(await self.redis.hgetall(key))
        if stored is None:
            return None
        ttl = self.settings.video_ttl_s
        pipe = self.redis.pipeline(transaction=False)
        for k in [key, *self.keys.chunks(owner, video_id, stored.chunks)]:
            pipe.expire(k, ttl)
        renewed = await pipe.execute()
        return stored if all(renewed) else None  # a chunk gone: the upload is incomplete
