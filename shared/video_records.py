"""What the fleet keeps in Redis for videos (shared/records.py has the rest):

    {p}:video:{owner}:{id}       hash  the upload's `VideoInfo` fields, plus
                                       chunk_bytes and chunks               TTL video_ttl_s
    {p}:video:{owner}:{id}:{n}   str   byte chunk n of the file             TTL video_ttl_s
    {p}:frames:{job_id}          hash  frame number -> frame record JSON,
                                       each written once                    TTL of the job
    {p}:job:{job_id}             hash  a video job's record also holds
                                       frames_done and frames_total

The file is stored in chunks so that a worker on any host reads only the bytes its
decoder asks for. Chunks are written before the info hash, and the info hash is what
marks an upload complete: a half-written upload is never seen. `id` is the file's
sha256, so the same file uploaded twice by one owner is stored once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sam2fleet.shared.records import _text
from sam2fleet.shared.schemas import VideoInfo

CHUNK_BYTES = 1 << 20  # Redis strings of 1 MiB: small enough to fetch as needed


@dataclass(frozen=True)
class VideoKeys:
    prefix: str

    def video(self, owner: str, video_id: str) -> str:
        return f"{self.prefix}:video:{owner}:{video_id}"

    def chunk(self, owner: str, video_id: str, n: int) -> str:
        return f"{self.video(owner, video_id)}:{n}"

    def chunks(self, owner: str, video_id: str, count: int) -> list[str]:
        return [self.chunk(owner, video_id, n) for n in range(count)]

    def frames(self, job_id: str) -> str:
        return f"{self.prefix}:frames:{job_id}"


@dataclass(frozen=True)
class StoredVideo:
    """The info hash: what the upload answered, and where its bytes are."""

    info: VideoInfo
    chunk_bytes: int
    chunks: int

    def to_redis(self) -> dict[str, str]:
        out = {k: str(v) for k, v in self.info.model_dump().items()}
        out.update(chunk_bytes=str(self.chunk_bytes), chunks=str(self.chunks))
        return out

    @classmethod
    def from_redis(cls, raw: Mapping[bytes, bytes] | Mapping[str, str]) -> StoredVideo | None:
        if not raw:
            return None
        fields = _text(raw)
        return cls(
            VideoInfo.model_validate(fields),
            int(fields["chunk_bytes"]),
            int(fields["chunks"]),
        )


# KEYS: job, frames. ARGV: frame number, record JSON. A frame record is written once
# (a redelivered job recomputes frames already stored: they are not written twice or
# counted twice), and never after the job ended (a cancelled job's frames stay as
# they were when it was cancelled). 1: written; 0: already there; -1: job ended.
FRAME_SCRIPT = """
local s = redis.call('HGET', KEYS[1], 'status')
if s ~= 'running' then return -1 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'frames_done', 1)
if redis.call('PTTL', KEYS[2]) < 0 then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
end
return 1
"""
