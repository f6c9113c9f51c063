"""Everything the fleet keeps in Redis: the names, the job record, the worker
heartbeat (the scripts that change a job's state: shared/record_scripts.py). Gateway
and workers both use this module, so they cannot disagree about a field name or a
terminal status.

    {p}:image:{owner}:{id} hash  data, width, height, format        TTL image_ttl_s
    {p}:job:{job_id}       hash  the job record (`JobRecord`)         TTL job_ttl_s
                                 (videos: shared/video_records.py)
    {p}:result:{job_id}    str   result JSON, written once            TTL job_ttl_s
    {p}:done:{job_id}      pub/sub channel announcing a terminal state
    {p}:worker:{name}      hash  heartbeat (`Heartbeat`)              TTL heartbeat_ttl_s
    {p}:idem:{owner}:{h}   str   "{fingerprint} {job_id}"             TTL idempotency_ttl_s
    {p}:rate:{owner}       zset  the key's submits in the last minute (request
                                 id -> time in ms): a sliding window    TTL 60 s
    {p}:admitting:{model}  zset  admission slots reserved but not yet queued
                                 (reservation id -> expiry in ms)
    {p}:apikeys            hash  sha256(key) -> key name (never the key itself)
    {p}:affinity:{model}:{owner}:{image_id}
                           str   the private queue of the worker holding that
                                 image's embedding                     TTL affinity_ttl_s
    {p}:private_queues:{model}
                           set   every worker's private queue and in-flight list,
                                 swept for dead workers' ones
    {p}:inflight:{worker}  list  Celery messages of jobs a worker took into a batch
                                 (cross-job batching); back to the shared queue if
                                 the worker dies
    {p}:held:{worker}      hash  job id -> delivery tag of each job the worker
                                 started and has not finished ("" for a job taken
                                 into a batch): what a dead worker's sweep releases
    {p}:holders            hash  worker name -> its supervisor's beat key, for every
                                 worker that may hold jobs; swept for dead ones
    {p}:supervisor:{node}-{pid}
                           str   the Celery supervisor's own beat        TTL heartbeat_ttl_s
    {p}:fault:{image_id}   str   injected fault (test seam, fault_injection only)
    {p}.{model}            list  the model's shared Celery queue (kombu's layout)
    {p}.{model}.w.{worker} list  one worker's private queue (image affinity)

`owner` is a short id derived from the API key's hash ("anon" with auth off), so
another key can neither read nor guess its way to someone else's images or jobs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, cast

from sam2fleet.shared.schemas import ErrorBody, JobSpec, JobStatus

TERMINAL: frozenset[JobStatus] = frozenset(s for s in JobStatus if s.terminal)

Mode = Literal["prompt", "auto", "video"]


@dataclass(frozen=True)
class Keys:
    prefix: str

    def image(self, owner: str, image_id: str) -> str:
        return f"{self.prefix}:image:{owner}:{image_id}"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def result(self, job_id: str) -> str:
        return f"{self.prefix}:result:{job_id}"

    def done(self, job_id: str) -> str:
        return f"{self.prefix}:done:{job_id}"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    def workers_pattern(self) -> str:
        return f"{self.prefix}:worker:*"

    def worker_name(self, key: str) -> str:
        """The worker name inside a heartbeat key."""
        return key.rsplit(":worker:", 1)[1]

    def idempotency(self, owner: str, key_hash: str) -> str:
        return f"{self.prefix}:idem:{owner}:{key_hash}"

    def rate(self, owner: str) -> str:
        return f"{self.prefix}:rate:{owner}"

    def reservations(self, model: str) -> str:
        return f"{self.prefix}:admitting:{model}"

    def api_keys(self) -> str:
        return f"{self.prefix}:apikeys"

    def affinity(self, model: str, owner: str, image_id: str) -> str:
        return f"{self.prefix}:affinity:{model}:{owner}:{image_id}"

    def private_queues(self, model: str) -> str:
        return f"{self.prefix}:private_queues:{model}"

    def inflight(self, worker: str) -> str:
        return f"{self.prefix}:inflight:{worker}"

    def held(self, worker: str) -> str:
        return f"{self.prefix}:held:{worker}"

    def holders(self) -> str:
        return f"{self.prefix}:holders"

    def replication_probe(self, worker: str) -> str:
        """A scratch key a worker writes so that a Redis `WAIT` on its connection has a
        write of its own to wait for (worker/store.py)."""
        return f"{self.prefix}:replication_probe:{worker}"

    def supervisor(self, node: str, pid: int) -> str:
        """The beat of a worker's Celery supervisor (the process holding its broker
        connection and so its unacknowledged messages)."""
        return f"{self.prefix}:supervisor:{node}-{pid}"

    def fault(self, image_id: str) -> str:
        return f"{self.prefix}:fault:{image_id}"

    # Queue names are kombu list keys in the same Redis, under the same prefix.

    def queue(self, model: str) -> str:
        """The model's shared Celery queue."""
        return f"{self.prefix}.{model}"

    def private_queue(self, model: str, node: str, supervisor_pid: int) -> str:
        """A worker's own queue, for jobs on images whose embedding it holds. Named per
        supervisor process: a restarted worker has an empty cache and a new queue."""
        return f"{self.private_queue_prefix(model)}{node}-{supervisor_pid}"

    def private_queue_prefix(self, model: str) -> str:
        """What every private queue of the model starts with (in-flight lists do not)."""
        return f"{self.queue(model)}.w."


def _text(raw: Mapping[bytes, bytes] | Mapping[str, str]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }


def _opt_float(value: str | None) -> float | None:
    return float(value) if value else None


@dataclass(frozen=True)
class JobRecord:
    """The job hash `{p}:job:{id}`: written by the gateway, advanced by workers."""

    id: str
    status: JobStatus
    model: str
    mode: Mode
    image_id: str  # the job's input: an image, or for mode "video" a video
    owner: str
    created_at: float
    spec_json: str  # the validated `JobSpec`, as the gateway accepted it
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    error: ErrorBody | None = None
    # Calls of the terminal-write script for this job, accepted or refused: a job
    # run twice to the end shows 2 here even though only one result is kept.
    terminal_attempts: int = 0
    # The worker running the job now (set by the start script, cleared when a sweep
    # releases the job of a dead worker), and terminal writes refused because they
    # came from a worker that no longer held the job (fencing).
    holder: str = ""
    fenced_writes: int = 0
    # Video jobs: frame records written so far, and how many the job will write.
    frames_done: int | None = None
    frames_total: int | None = None

    @classmethod
    def new(cls, job_id: str, spec: JobSpec, model: str, image_id: str, owner: str) -> JobRecord:
        return cls(
            id=job_id,
            status=JobStatus.queued,
            model=model,
            mode=spec.mode,
            image_id=image_id,
            owner=owner,
            created_at=time.time(),
            spec_json=spec.model_dump_json(),
        )

    @property
    def spec(self) -> JobSpec:
        return JobSpec.model_validate_json(self.spec_json)

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    def to_redis(self) -> dict[str, str]:
        """The hash fields; optional ones only when set."""
        out = {
            "id": self.id,
            "status": self.status.value,
            "model": self.model,
            "mode": self.mode,
            "image_id": self.image_id,
            "owner": self.owner,
            "created_at": repr(self.created_at),
            "spec": self.spec_json,
            "attempts": str(self.attempts),
        }
        if self.started_at is not None:
            out["started_at"] = repr(self.started_at)
        if self.finished_at is not None:
            out["finished_at"] = repr(self.finished_at)
        if self.error is not None:
            out["error"] = self.error.model_dump_json()
        if self.frames_total is not None:
            out["frames_total"] = str(self.frames_total)
            out["frames_done"] = str(self.frames_done or 0)
        return out

    @classmethod
    def from_redis(cls, raw: Mapping[bytes, bytes] | Mapping[str, str]) -> JobRecord | None:
        """The record from HGETALL; None for a missing (or expired) one."""
        if not raw:
            return None
        f = _text(raw)
        return cls(
            id=f["id"],
            status=JobStatus(f["status"]),
            model=f["model"],
            mode=cast(Mode, f["mode"]),
            image_id=f["image_id"],
            owner=f.get("owner", "anon"),
            created_at=float(f["created_at"]),
            spec_json=f["spec"],
            attempts=int(f.get("attempts") or 0),
            started_at=_opt_float(f.get("started_at")),
            finished_at=_opt_float(f.get("finished_at")),
            error=ErrorBody.model_validate_json(f["error"]) if f.get("error") else None,
            terminal_attempts=int(f.get("terminal_attempts") or 0),
            holder=f.get("holder", ""),
            fenced_writes=int(f.get("fenced_writes") or 0),
            frames_done=int(f["frames_done"]) if f.get("frames_done") else None,
            frames_total=int(f["frames_total"]) if f.get("frames_total") else None,
        )

    def public(self, result_json: bytes | str | None = None) -> dict[str, Any]:
        """The `JobPublic` contract: the record, plus the result once succeeded."""
        out: dict[str, Any] = {
            "id": self.id,
            "status": self.status.value,
            "model": self.model,
            "mode": self.mode,
            "image_id": self.image_id,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "attempts": self.attempts,
        }
        if self.mode == "video":
            out["video_id"] = out.pop("image_id")
            if self.frames_total is not None:
                out["progress"] = {
                    "frames_done": self.frames_done or 0,
                    "frames_total": self.frames_total,
                }
        if self.error is not None:
            out["error"] = self.error.model_dump()
        if result_json is not None and self.status is JobStatus.succeeded:
            out["result"] = json.loads(result_json)
        return out

    def with_status(self, status: JobStatus) -> JobRecord:
        return replace(self, status=status)


@dataclass(frozen=True)
class Heartbeat:
    """The worker hash `{p}:worker:{name}`, rewritten every heartbeat interval."""

    model: str
    device: str
    weights: str
    warm: bool
    pid: int
    queue: str  # its private queue (image affinity)
    inflight: str  # its in-flight list (cross-job batching)
    ts: float = field(default_factory=time.time)
    # The Celery supervisor that forked this pool process: `sam2fleet up` tells by it
    # which of its workers has warmed up (sam2fleet/launcher/supervisor.py).
    parent_pid: int = 0
    cuda_cache_clears: int = 0
    cuda_cache_bytes_released: int = 0

    def to_redis(self) -> dict[str, str]:
        out = {f.name: str(getattr(self, f.name)) for f in fields(self)}
        out["warm"] = "1" if self.warm else "0"
        out["ts"] = repr(self.ts)
        return out

    @classmethod
    def from_redis(cls, raw: Mapping[bytes, bytes] | Mapping[str, str]) -> Heartbeat | None:
        f = _text(raw)
        try:
            return cls(
                model=f["model"],
                device=f.get("device", ""),
                weights=f.get("weights", ""),
                warm=f.get("warm") == "1",
                pid=int(f.get("pid") or 0),
                queue=f.get("queue", ""),
                inflight=f.get("inflight", ""),
                ts=float(f["ts"]),
                parent_pid=int(f.get("parent_pid") or 0),
                cuda_cache_clears=int(f.get("cuda_cache_clears") or 0),
                cuda_cache_bytes_released=int(f.get("cuda_cache_bytes_released") or 0),
            )
        except (KeyError, ValueError):
            return None  # half-written or foreign: not a live worker

    def age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.ts
