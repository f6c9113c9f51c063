"""The worker's side of the job records in Redis: start, finish, heartbeat.

Terminal writes are one Lua script keyed by job id, so a redelivered job (a worker
died after computing but before acknowledging) can never produce a second result
or overwrite a cancellation. A store built for a named worker (`holder`) records
itself as the holder of each job it starts, and its terminal writes are fenced: a
worker whose job was taken over by another while it was cut off from Redis
(worker/takeover.py) has its late write refused and counted (`fenced_writes`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from sam2fleet.shared import redis_clients
from sam2fleet.shared.errors import WorkerCrashed
from sam2fleet.shared.record_scripts import FINISH_SCRIPT, START_SCRIPT
from sam2fleet.shared.records import TERMINAL, Heartbeat, JobRecord, Keys
from sam2fleet.shared.schemas import ErrorBody, JobStatus

log = logging.getLogger(__name__)

T = TypeVar("T")


class JobStore:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        max_attempts: int = 3,
        retry_s: float = 30.0,
        holder: str = "",
        supervisor: str = "",
        replicas: int = 0,
        replica_timeout_ms: int = 1000,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.max_attempts = max_attempts
        self.retry_s = retry_s
        # Replicas a terminal write must reach (Sentinel; 0: one Redis, nothing to wait).
        self.replicas = replicas
        self.replica_timeout_ms = replica_timeout_ms
        self.rewritten = 0  # terminal writes made again: lost with a Redis primary
        # The worker this store writes for ("": a supervisor writing on a job's behalf,
        # unfenced) and its supervisor's beat key.
        self.holder = holder
        self.supervisor = supervisor
        self.fenced_writes = 0  # terminal writes refused: the job was taken over
        self._start = client.register_script(START_SCRIPT)
        self._finish = client.register_script(FINISH_SCRIPT)

    def retrying(self, call: Callable[[], T]) -> T:
        """Ride out a Redis restart: a computed result is worth a few seconds' wait."""
        deadline = time.monotonic() + self.retry_s
        delay = 0.2
        while True:
            try:
                return call()
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("redis unavailable (%s); retrying in %.1fs", type(exc).__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def start(self, job_id: str, delivery_tag: str = "") -> JobRecord | None:
        """Mark the job running, held by this worker under the delivery tag of its
        Celery message ("" for a job taken into a batch); None when it is gone,
        cancelled, done or out of attempts."""
        error = json.dumps(
            WorkerCrashed(
                f"the job's worker died on each of its {self.max_attempts} attempts"
            ).to_dict()
        )
        keys = [
            self.keys.job(job_id),
            self.keys.done(job_id),
            self.keys.held(self.holder),
            self.keys.holders(),
        ]
        args = [time.time(), self.max_attempts, error, self.holder, job_id, delivery_tag]
        state = self.retrying(lambda: self._start(keys=keys, args=[*args, self.supervisor]))
        if state != b"running":
            return None
        return self.record(job_id)

    def record(self, job_id: str) -> JobRecord | None:
        return JobRecord.from_redis(
            self.retrying(lambda: self.redis.hgetall(self.keys.job(job_id)))
        )

    def status(self, job_id: str) -> JobStatus | None:
        value = self.retrying(lambda: self.redis.hget(self.keys.job(job_id), "status"))
        return JobStatus(value.decode()) if value else None

    def image_bytes(self, owner: str, image_id: str) -> bytes | None:
        data: bytes | None = self.retrying(
            lambda: self.redis.hget(self.keys.image(owner, image_id), "data")
        )
        return data

    def image_hw(self, owner: str, image_id: str) -> tuple[int, int] | None:
        """(height, width) from the upload's probe, without fetching the pixels."""
        key = self.keys.image(owner, image_id)
        height, width = self.retrying(lambda: self.redis.hmget(key, "height", "width"))
        return None if height is None or width is None else (int(height), int(width))

    def fault(self, image_id: str) -> str | None:
        value = self.redis.get(self.keys.fault(image_id))
        return value.decode() if value else None

    def succeed(self, job_id: str, result: dict[str, Any]) -> bool:
        return self._terminal(job_id, "succeeded", json.dumps(result), "")

    def fail(self, job_id: str, error: ErrorBody) -> bool:
        return self._terminal(job_id, "failed", "", error.model_dump_json())

    def _terminal(self, job_id: str, status: str, result: str, error: str) -> bool:
        keys = [
            self.keys.job(job_id),
            self.keys.result(job_id),
            self.keys.done(job_id),
            self.keys.held(self.holder),
        ]
        args = [status, result, error, time.time(), self.holder, job_id]
        written, acked = self.retrying(lambda: self._finish_and_wait(keys, args))
        if written < 0:
            self._fenced(job_id, status)
        elif acked < self.replicas:
            self._until_replicated(job_id, status, keys, args)
        return written > 0

    def _fenced(self, job_id: str, status: str) -> None:
        self.fenced_writes += 1
        log.warning(
            "job %s: this worker no longer holds the job (another worker took it "
            "over while this one was out of reach); its %s outcome is discarded",
            job_id,
            status,
        )

    def _finish_and_wait(self, keys: list[str], args: list[Any]) -> tuple[int, int]:
        """The terminal-write script, then `WAIT` for the replicas on the same
        connection: (the script's answer, replicas holding the write)."""
        if self.replicas <= 0:
            return int(self._finish(keys=keys, args=args)), 0
        pipe = self.redis.pipeline(transaction=False)
        self._finish(keys=keys, args=args, client=pipe)
        pipe.wait(self.replicas, self.replica_timeout_ms)
        written, acked = pipe.execute()
        return int(written), int(acked)

    def _probe_and_wait(self) -> int:
        """Replicas holding everything written so far: WAIT after a write of our own."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self.keys.replication_probe(self.holder or "supervisor"), b"1", px=60_000)
        pipe.wait(self.replicas, self.replica_timeout_ms)
        return int(pipe.execute()[1])

    def _until_replicated(self, job_id: str, status: str, keys: list[str], args: list[Any]) -> None:
        """A job's outcome counts once `replicas` replicas hold it. Redis replicates
        asynchronously: a primary SIGKILLed right after the write takes it along, the
        promoted replica's record still says `running`, held by this very worker, which
        is alive, so no sweep will ever release the job. So keep asking which server is
        the primary and whether it holds the outcome; write it again where it does not
        (the same outcome, not a second run; counted in `rewritten`). Gives up after
        `retry_s`: then the replicas are gone, and the primary refuses writes anyway
        (`min-replicas-to-write`)."""
        deadline = time.monotonic() + self.retry_s
        acked = 0
        while acked < self.replicas and time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                redis_clients.follow_primary(self.redis)
                held = self.redis.hget(self.keys.job(job_id), "status")
                if held is not None and JobStatus(held.decode()) in TERMINAL:
                    acked = self._probe_and_wait()
                    continue
                written, acked = self._finish_and_wait(keys, args)
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                continue  # a failover under way
            except redis.ResponseError as exc:  # NOREPLICAS: a primary short of replicas
                log.warning("job %s: %s", job_id, exc)
                continue
            if written < 0:
                self._fenced(job_id, status)
                return
            if written > 0:
                self.rewritten += 1
                log.warning(
                    "job %s: its %s outcome was lost with a Redis primary before any "
                    "replica held it; written again",
                    job_id,
                    status,
                )
        if acked < self.replicas:
            log.warning(
                "job %s: its %s outcome reached %d of %d replica(s) within %.0f s",
                job_id,
                status,
                acked,
                self.replicas,
                self.retry_s,
            )

    def claim_affinity(self, model: str, owner: str, image_id: str, queue: str, ttl_s: int) -> None:
        """Tell the gateway that `queue`'s worker holds the image's embedding now."""
        try:
            self.redis.set(self.keys.affinity(model, owner, image_id), queue, ex=ttl_s)
        except redis.RedisError as exc:  # affinity is an optimisation; the job is done
            log.warning("could not record image affinity: %s", exc)

    def heartbeat(self, name: str, beat: Heartbeat, ttl_s: float) -> None:
        key = self.keys.worker(name)
        pipe = self.redis.pipeline()
        pipe.hset(key, mapping=beat.to_redis())
        pipe.pexpire(key, int(ttl_s * 1000))
        pipe.execute()

    def forget_worker(self, name: str) -> None:
        self.redis.delete(self.keys.worker(name))
