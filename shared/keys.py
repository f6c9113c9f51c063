"""Redis key layout. Every key starts with the configured prefix.

    {p}:image:{owner}:{id} hash  data, width, height, format        TTL image_ttl_s
    {p}:job:{job_id}       hash  the job record, incl. its owner      TTL job_ttl_s
    {p}:result:{job_id}    str   result JSON, written once            TTL job_ttl_s
    {p}:done:{job_id}      pub/sub channel announcing a terminal state
    {p}:worker:{name}      hash  heartbeat: model, device, warm, ts   TTL heartbeat_ttl_s
    {p}:idem:{owner}:{h}   str   "{fingerprint} {job_id}"             TTL idempotency_ttl_s
    {p}:rate:{owner}:{min} int   submits in that minute                TTL 60 s
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
    {p}:fault:{image_id}   str   injected fault (test seam, fault_injection only)
    {p}.{model}            list  the model's shared Celery queue (kombu's layout)
    {p}.{model}.w.{worker} list  one worker's private queue (image affinity)

`owner` is a short id derived from the API key's hash ("anon" with auth off), so
another key can neither read nor guess its way to someone else's images or jobs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

TERMINAL = ("succeeded", "failed", "cancelled")


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

    def idempotency(self, owner: str, key_hash: str) -> str:
        return f"{self.prefix}:idem:{owner}:{key_hash}"

    def rate(self, owner: str, minute: int) -> str:
        return f"{self.prefix}:rate:{owner}:{minute}"

    def api_keys(self) -> str:
        return f"{self.prefix}:apikeys"

    def affinity(self, model: str, owner: str, image_id: str) -> str:
        return f"{self.prefix}:affinity:{model}:{owner}:{image_id}"

    def private_queues(self, model: str) -> str:
        return f"{self.prefix}:private_queues:{model}"

    def inflight(self, worker: str) -> str:
        return f"{self.prefix}:inflight:{worker}"

    def fault(self, image_id: str) -> str:
        return f"{self.prefix}:fault:{image_id}"


def decode_hash(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


def job_public_dict(record: dict[str, str], result_json: bytes | None) -> dict[str, Any]:
    """Shape a stored job record (and its result) as the `JobPublic` contract."""

    def num(name: str) -> float | None:
        value = record.get(name)
        return float(value) if value else None

    out: dict[str, Any] = {
        "id": record["id"],
        "status": record["status"],
        "model": record["model"],
        "mode": record["mode"],
        "image_id": record["image_id"],
        "created_at": float(record["created_at"]),
        "started_at": num("started_at"),
        "finished_at": num("finished_at"),
        "attempts": int(record.get("attempts") or 0),
    }
    if record.get("error"):
        out["error"] = json.loads(record["error"])
    if result_json is not None and record["status"] == "succeeded":
        out["result"] = json.loads(result_json)
    return out
