"""A lost worker costs seconds: the jobs of a worker whose heartbeats stopped run again.

Celery alone redelivers the message of a worker that vanished whole (its host lost,
its container OOM-killed, supervisor and model process SIGKILLed together) only when
the broker's visibility timeout has passed, an hour by default. The fleet knows more:

- each model process heartbeats (`{p}:worker:{name}`, TTL `heartbeat_ttl_s`), and so
  does its Celery supervisor (`{p}:supervisor:{node}-{pid}`, worker/celery_app.py),
  the process that holds the broker connection and the unacknowledged message;
- the start script records the job's holder, and the delivery tag of the job's
  message in the holder's held hash (`{p}:held:{name}`), registered in `{p}:holders`.

Every live worker's heartbeat loop calls `Takeover.sweep`. For each registered holder
without a heartbeat, each job it holds goes through one Lua script
(shared/records.py RELEASE_SCRIPT), so two sweepers can never both requeue it:

- the job is released: back to `queued`, holder cleared; once another worker has
  started it, a terminal write by the old holder (a host cut off from Redis that
  comes back) is refused by the finish script and counted (fencing), so the job's one
  result is the new holder's;
- once the supervisor is gone too, a job nobody else has started since has its
  message moved, as delivered, from kombu's unacknowledged set to the head of the job
  model's shared queue, with a new delivery tag (so a late acknowledgement by the old
  supervisor cannot remove the new delivery). While the supervisor still beats, the
  entry is kept and the message left alone: a living supervisor whose model process
  died requeues the message itself (acks late, reject on worker lost), and taking it
  here as well would run the job twice. The two beats expire a moment apart when a
  whole host is lost, so a later sweep requeues it then.

Jobs a dead worker had taken into a batch have no message of their own there ("" as
tag): they are released here, and their messages come back from the worker's in-flight
list (worker/runtime.py `rescue_orphaned_queues`).

So a lost worker's job runs again `heartbeat_ttl_s` + one `heartbeat_interval_s` after
its last heartbeat at most (25 s with the defaults), plus whatever the next worker needs
to take it. A sweeper whose own beats failed lately (it was the one cut off, or Redis
restarted) first beats for one `heartbeat_ttl_s` without sweeping, so that it never
mistakes workers that simply had no chance to beat yet for dead ones.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sam2fleet.shared.queue import UNACKED, UNACKED_INDEX
from sam2fleet.shared.record_scripts import FORGET_HOLDER_SCRIPT, RELEASE_SCRIPT
from sam2fleet.worker.store import JobStore

log = logging.getLogger(__name__)


@dataclass
class Swept:
    """What one sweep did: jobs it released from dead workers (back to `queued`, their
    holder cleared), and jobs whose unacknowledged message it put back in a queue
    (released now, or by an earlier sweep while the supervisor still beat)."""

    released: int = 0
    requeued: int = 0


class Takeover:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._release = store.redis.register_script(RELEASE_SCRIPT)
        self._forget = store.redis.register_script(FORGET_HOLDER_SCRIPT)
        self.released = 0  # totals over this process's life (worker metrics)
        self.requeued = 0

    def sweep(self) -> Swept:
        """Release the jobs of every registered worker that stopped heartbeating."""
        r, keys = self.store.redis, self.store.keys
        swept = Swept()
        for raw_name, raw_supervisor in r.hgetall(keys.holders()).items():
            name, supervisor = raw_name.decode(), raw_supervisor.decode()
            if r.exists(keys.worker(name)):
                continue
            for job_id, tag in r.hgetall(keys.held(name)).items():
                outcome = self._release_one(name, supervisor, job_id.decode(), tag.decode())
                if outcome == "released":
                    swept.released += 1
                elif outcome == "requeued":
                    swept.requeued += 1
                if outcome in ("released", "requeued"):
                    log.warning(
                        "job %s: its worker %s stopped heartbeating; %s",
                        job_id.decode(),
                        name,
                        outcome,
                    )
            self._forget(keys=[keys.holders(), keys.worker(name), keys.held(name)], args=[name])
        self.released += swept.released
        self.requeued += swept.requeued
        return swept

    def _release_one(self, name: str, supervisor: str, job_id: str, tag: str) -> str:
        r, keys = self.store.redis, self.store.keys
        model = r.hget(keys.job(job_id), "model")
        queue = keys.queue(model.decode() if model else "")
        raw: bytes | None = None
        if tag and model and not r.exists(supervisor):
            raw = r.hget(UNACKED, tag)
        message = redelivery(raw, queue) if raw else ""
        outcome = self._release(
            keys=[
                keys.worker(name),
                supervisor,
                keys.held(name),
                keys.job(job_id),
                UNACKED,
                UNACKED_INDEX,
                queue,
            ],
            args=[name, job_id, tag, raw or "", message, time.time()],
        )
        return outcome.decode() if isinstance(outcome, bytes) else str(outcome)


def redelivery(unacked: bytes, queue: str) -> str:
    """The message to queue again, from kombu's unacked entry `[message, exchange,
    routing key]`: marked redelivered as kombu marks its own restores, routed to the
    shared queue, under a fresh delivery tag."""
    message = json.loads(unacked)[0]
    message.setdefault("headers", {})["redelivered"] = True
    properties = message.setdefault("properties", {})
    properties["delivery_tag"] = str(uuid.uuid4())
    info = properties.setdefault("delivery_info", {})
    info.update(redelivered=True, routing_key=queue)
    return json.dumps(message)


def delivery_tag(request: Any) -> str:
    """The delivery tag of the message a Celery task request runs ("" outside a
    delivered message). Celery passes the message's properties to the pool process;
    its `delivery_info` there carries no tag."""
    properties = getattr(request, "properties", None) or {}
    info = getattr(request, "delivery_info", None) or {}
    tag = properties.get("delivery_tag") or info.get("delivery_tag")
    return str(tag) if tag else ""
