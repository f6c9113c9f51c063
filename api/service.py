"""What the gateway does with Redis and the queue: no HTTP here.

A submit is checked in full first (image, model, prompts, a warm worker, then a
slot reserved atomically by api/admission.py), and only then written, in this
order: image, job record, queue message. If the message cannot be sent the record
is removed again, so a client told 503 never leaves a job behind that nobody will
run; the image stays for its TTL, content-addressed, for the client's retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio
import redis.asyncio as aredis
from celery import Celery
from redis.exceptions import RedisError

from sam2fleet.api import metrics
from sam2fleet.api.admission import Admission
from sam2fleet.api.done import DoneListener
from sam2fleet.api.prompts import check_mask_inputs, check_prompts
from sam2fleet.shared.errors import (
    Conflict,
    IdempotencyConflict,
    InvalidInput,
    JobError,
    JobTimeout,
    NotFound,
    NoWorkerReady,
    Sam2FleetError,
    Unavailable,
)
from sam2fleet.shared.images import ProbedImage, check_image
from sam2fleet.shared.models import MODELS
from sam2fleet.shared.queue import SEGMENT_TASK
from sam2fleet.shared.record_scripts import CANCEL_SCRIPT
from sam2fleet.shared.records import Heartbeat, JobRecord, Keys
from sam2fleet.shared.schemas import ErrorBody, JobSpec, JobStatus
from sam2fleet.shared.settings import Settings

WARM_SEEN_S = 1.0
# The worker queue holding an image's embedding, and that queue's backlog: one round
# trip on the hot path instead of two.
_AFFINITY_SCRIPT = """
local queue = redis.call('GET', KEYS[1])
if not queue then return false end
return {queue, redis.call('LLEN', queue)}
"""


class JobService:
    def __init__(self, settings: Settings, client: aredis.Redis, celery: Celery) -> None:
        self.settings = settings
        self.redis = client
        self.celery = celery
        self.keys = Keys(settings.key_prefix)
        self._cancel = client.register_script(CANCEL_SCRIPT)
        self._affinity = client.register_script(_AFFINITY_SCRIPT)
        self.admission = Admission(settings, client)
        self.done = DoneListener(client, self.keys)  # started by the app's lifespan
        self._warm_seen: dict[str, tuple[float, list[Heartbeat]]] = {}

    # --- images ------------------------------------------------------------------

    def probe(self, data: bytes) -> ProbedImage:
        """Everything an image must pass before anything is stored: a known format,
        size limits read from its header, and a full decode."""
        return check_image(data, max_pixels=self.settings.max_image_pixels)

    async def store_image(self, data: bytes, owner: str) -> ProbedImage:
        """An upload: checked, then stored if Redis has room for it."""
        probed = self.probe(data)
        await self.admission.check_storage(len(data))
        await self._write_image(data, probed, owner)
        return probed

    async def _write_image(self, data: bytes, probed: ProbedImage, owner: str) -> None:
        key = self.keys.image(owner, probed.image_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            key,
            mapping={
                "data": data,
                "width": probed.width,
                "height": probed.height,
                "format": probed.format,
            },
        )
        pipe.expire(key, self.settings.image_ttl_s)
        await pipe.execute()

    async def image_info(self, image_id: str, owner: str) -> ProbedImage | None:
        """An uploaded image's size and format, kept at least as long as a fresh upload
        from now, since a job is about to read it (one round trip for both)."""
        key = self.keys.image(owner, image_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(key, "width", "height", "format")
        pipe.expire(key, self.settings.image_ttl_s)
        fields, _ = await pipe.execute()
        if fields[0] is None:
            return None
        return ProbedImage(image_id, fields[2].decode(), int(fields[0]), int(fields[1]))

    # --- jobs ----------------------------------------------------------------------

    async def submit(
        self,
        spec: JobSpec,
        image: ProbedImage,
        owner: str,
        idempotency_key: str | None = None,
        data: bytes | None = None,
        wait_s: float = 0.0,
    ) -> dict[str, Any]:
        """Queue a job on `image`: its bytes in `data` when the request brought them,
        else an uploaded image (`image_info`). Every check (model, prompts, a warm
        worker, room in Redis and in the queue) comes before anything is stored, so a
        refused request leaves nothing behind. With `wait_s`, wait up to that long
        for the job to end and answer it as `get` would: one round trip for a job
        that ends in time (interactive clicks), the queued job otherwise."""
        if wait_s <= 0:
            return await self._submit(spec, image, owner, idempotency_key, data, uuid.uuid4().hex)
        job_id = uuid.uuid4().hex
        deadline = time.monotonic() + min(wait_s, self.settings.max_wait_s)
        # Watched before the job is queued: its end cannot be missed.
        with self.done.watch(job_id) as ended:
            job = await self._submit(spec, image, owner, idempotency_key, data, job_id)
            if job["id"] != job_id:  # an earlier request's job (same Idempotency-Key)
                return await self.get(job["id"], owner, deadline - time.monotonic())
            record, result = await self._until_done(ended, deadline, job_id, owner, fresh=True)
        return record.public(result)

    async def _submit(
        self,
        spec: JobSpec,
        image: ProbedImage,
        owner: str,
        idempotency_key: str | None,
        data: bytes | None,
        job_id: str,
    ) -> dict[str, Any]:
        model = spec.model or self.settings.model
        if model not in MODELS:
            raise InvalidInput(f"unknown model {model!r}; served: {', '.join(sorted(MODELS))}")
        check_prompts(spec.prompts, image, self.settings)
        await check_mask_inputs(
            spec, image, model, lambda job_id: self._record(job_id, owner), self.settings
        )
        spec = spec.model_copy(update={"model": model})

        async def queue_it(warm: list[Heartbeat]) -> dict[str, Any]:
            if data is not None:  # the request brought the image: store it now
                await self._write_image(data, image, owner)
            queue = await self._route(spec, owner, image.image_id, model, warm)
            record = JobRecord.new(job_id, spec, model, image.image_id, owner)
            return await self.queue_record(record, queue)

        fingerprint = f"{image.image_id}:{spec.model_dump_json()}"
        return await self.admit(
            owner, model, job_id, idempotency_key, fingerprint, len(data or b""), queue_it
        )

    async def admit(
        self,
        owner: str,
        model: str,
        job_id: str,
        idempotency_key: str | None,
        fingerprint: str,
        stored_bytes: int,
        queue_it: Callable[[list[Heartbeat]], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        """The steps every kind of job takes once its request is valid: the
        Idempotency-Key claimed (or the earlier identical request's job returned), a
        warm worker required, room in Redis and in the model's queue reserved in one
        step (api/admission.py), then `queue_it` with the warm workers' heartbeats."""
        idem_key = None
        if idempotency_key is not None:
            idem_key, existing = await self._claim_idempotency(
                owner, idempotency_key, fingerprint, job_id
            )
            if existing is not None:
                return existing
        try:
            # One heartbeat scan serves readiness and affinity alike.
            warm = await self._warm_for_submit(model)
            if not warm:
                raise NoWorkerReady(f"no worker serving {model} is ready; retry shortly")
            reservation = await self.admission.reserve(model, stored_bytes)
            try:
                return await queue_it(warm)
            finally:
                # Queued (its message now counts) or refused: the slot goes either way.
                await self.admission.release(model, reservation)
        except (Sam2FleetError, RedisError):
            # Refused (no worker, no room, Redis or the queue unreachable): nothing
            # was accepted, so the key may be used again. A cancelled request leaves the
            # claim in place: its message may already be on the queue.
            if idem_key is not None:
                await self.redis.delete(idem_key)
            raise

    async def _claim_idempotency(
        self, owner: str, key: str, fingerprint_src: str, job_id: str
    ) -> tuple[str, dict[str, Any] | None]:
        """Claim the key for this job, or return the job an earlier identical request made."""
        idem_key = self.keys.idempotency(owner, hashlib.sha256(key.encode()).hexdigest())
        fingerprint = hashlib.sha256(fingerprint_src.encode()).hexdigest()
        claimed = await self.redis.set(
            idem_key, f"{fingerprint} {job_id}", nx=True, ex=self.settings.idempotency_ttl_s
        )
        if claimed:
            return idem_key, None
        stored = await self.redis.get(idem_key)
        if stored is None:  # expired between the two calls: claim again
            return await self._claim_idempotency(owner, key, fingerprint_src, job_id)
        their_fingerprint, their_job = stored.decode().split(" ", 1)
        if their_fingerprint != fingerprint:
            raise IdempotencyConflict("this Idempotency-Key was used with a different request")
        try:
            return idem_key, await self.get(their_job, owner)
        except NotFound:
            # The first request is still being accepted (or its job expired).
            raise Conflict("a request with this Idempotency-Key is in progress; retry") from None

    async def queue_record(self, record: JobRecord, queue: str, **send: Any) -> dict[str, Any]:
        """Write a new job's record, then send its message to `queue` (`send`: more of
        Celery's options, e.g. a video job's time limits); the record is removed if the
        message cannot be sent. Answers once the replicas required hold it."""
        key = self.keys.job(record.id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping=record.to_redis())
        pipe.expire(key, self.settings.job_ttl_s)
        await pipe.execute()
        try:
            await anyio.to_thread.run_sync(partial(self._send, record.id, queue, **send))
        except Exception as exc:
            await self.redis.delete(key)
            raise Unavailable(f"could not queue the job: {type(exc).__name__}") from None
        await self.replicated(record.id)
        metrics.job_submitted(record.id, record.model, record.mode)
        return record.public()

    async def replicated(self, job_id: str) -> None:
        """Return once `replicas_to_ack` replicas hold the job's record and message,
        so a failover after the 202 cannot lose the job (Redis replicates
        asynchronously). The message went through the broker's own connection, so the
        WAIT follows a write of ours made after it: a replica applies the primary's
        writes in order, so holding this one it holds the message too. Not replicated
        in time: the job is withdrawn and `Unavailable` raised, and the client, told
        503, retries; a worker that takes the message meanwhile finds no record and
        skips it."""
        replicas = self.settings.replicas_to_ack()
        if replicas <= 0:
            return
        key = self.keys.job(job_id)
        pipe = self.redis.pipeline(transaction=False)  # one connection: WAIT sees our write
        pipe.expire(key, self.settings.job_ttl_s)  # a write, replicated like any other
        pipe.wait(replicas, self.settings.redis_replica_ack_timeout_ms)
        _, acked = await pipe.execute()
        if int(acked) >= replicas:
            return
        with contextlib.suppress(RedisError):
            await self.redis.delete(key)
        raise Unavailable(
            f"the job reached {acked} of the {replicas} Redis replica(s) required within "
            f"{self.settings.redis_replica_ack_timeout_ms} ms, so it was withdrawn; retry"
        )

    async def _route(
        self, spec: JobSpec, owner: str, image_id: str, model: str, warm: list[Heartbeat]
    ) -> str:
        """The worker holding this image's embedding if it is alive and not backed up
        (image affinity), else the model's shared queue."""
        shared = self.keys.queue(model)
        if spec.mode != "prompt" or self.settings.affinity_ttl_s <= 0:
            return shared
        held_by = await self._affinity(keys=[self.keys.affinity(model, owner, image_id)])
        if not held_by:
            return shared
        queue, backlog = held_by[0].decode(), int(held_by[1])
        if queue in {w.queue for w in warm} and backlog < self.settings.affinity_max_backlog:
            return str(queue)
        return shared

    def _send(self, job_id: str, queue: str, **options: Any) -> None:
        """`options`: more of Celery's `send_task` options (a video job's time limits)."""
        self.celery.send_task(
            SEGMENT_TASK,
            args=[job_id],
            queue=queue,
            **options,
            task_id=job_id,  # Celery's own log lines then name the job (shared/logs.py)
            # Workers declare the queues they consume; declaring (and binding) the
            # queue again on every publish cost two Redis round trips per submit.
            declare=[],
            retry=True,
            retry_policy={
                "max_retries": 2,
                "interval_start": 0.1,
                "interval_step": 0.2,
                "interval_max": 0.5,
            },
        )

    async def get(self, job_id: str, owner: str, wait_s: float = 0.0) -> dict[str, Any]:
        record, result = await self._read(job_id, owner)
        if not record.terminal and wait_s > 0:
            deadline = time.monotonic() + min(wait_s, self.settings.max_wait_s)
            with self.done.watch(job_id) as ended:
                record, result = await self._until_done(ended, deadline, job_id, owner)
        return record.public(result)

    async def _record(self, job_id: str, owner: str) -> JobRecord:
        return (await self._read(job_id, owner, with_result=False))[0]

    async def _read(
        self, job_id: str, owner: str, with_result: bool = True
    ) -> tuple[JobRecord, bytes | None]:
        """The job's record and, once it has succeeded, its result: one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.job(job_id))
        if with_result:
            pipe.get(self.keys.result(job_id))
        found = await pipe.execute()
        record = JobRecord.from_redis(found[0])
        # Another owner's job is answered exactly like a missing one: 404.
        if record is None or record.owner != owner:
            raise NotFound(f"no job {job_id} (unknown or expired)")
        result = found[1] if with_result and record.status is JobStatus.succeeded else None
        return record, result

    async def _until_done(
        self, ended: asyncio.Event, deadline: float, job_id: str, owner: str, fresh: bool = False
    ) -> tuple[JobRecord, bytes | None]:
        """The job's record (and result) once it has ended or the deadline
        (time.monotonic()) has passed; `ended` is its `done.watch` event. `fresh`: the
        job was queued after the watch began, so its first read can wait for the event.
        The record is read again at least once a second, in case the event was missed."""
        while True:
            if not fresh:
                record, result = await self._read(job_id, owner)
                if record.terminal or time.monotonic() >= deadline:
                    return record, result
            fresh = False
            left = max(0.0, deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), timeout=min(left, 1.0))
            ended.clear()

    async def submit_and_wait(
        self, spec: JobSpec, image: ProbedImage, owner: str, deadline: float, data: bytes | None
    ) -> dict[str, Any]:
        """Submit, then wait until the job ends or the `deadline` (time.monotonic())
        passes: the succeeded job as `get` returns it. A job still unfinished then is
        cancelled (nobody will collect it) and `JobTimeout` raised; a failed job
        raises `JobError` with its own error type."""
        timeout = deadline - time.monotonic()
        job = await self.submit(spec, image, owner, data=data, wait_s=max(timeout, 0.001))
        while not JobStatus(job["status"]).terminal and time.monotonic() < deadline:
            job = await self.get(job["id"], owner, deadline - time.monotonic())
        if not JobStatus(job["status"]).terminal:
            try:
                await self.cancel(job["id"], owner)
            except Conflict:
                job = await self.get(job["id"], owner)  # it ended just now
        status = JobStatus(job["status"])
        if status in (JobStatus.queued, JobStatus.running, JobStatus.cancelled):
            raise JobTimeout(
                f"job {job['id']} did not finish within {max(timeout, 0):g} s; it was "
                "cancelled. Retry later, wait longer, or use POST /v1/jobs and poll."
            )
        if status is JobStatus.failed:
            raise JobError(ErrorBody.model_validate(job["error"]))
        return job

    async def cancel(self, job_id: str, owner: str) -> dict[str, Any]:
        await self._record(job_id, owner)  # 404 for another owner's job
        state = (
            await self._cancel(
                keys=[self.keys.job(job_id), self.keys.done(job_id)], args=[time.time()]
            )
        ).decode()
        if state == "missing":
            raise NotFound(f"no job {job_id} (unknown or expired)")
        if state != "cancelled":
            raise Conflict(f"job {job_id} already {state}; only queued or running jobs cancel")
        return await self.get(job_id, owner)

    # --- fleet -----------------------------------------------------------------------

    async def workers(self) -> dict[str, Heartbeat]:
        """Workers heard from within the heartbeat window, by name."""
        found = {}
        now = time.time()
        async for key in self.redis.scan_iter(match=self.keys.workers_pattern(), count=100):
            beat = Heartbeat.from_redis(await self.redis.hgetall(key))
            if beat is not None and beat.age(now) <= self.settings.heartbeat_ttl_s:
                found[self.keys.worker_name(key.decode())] = beat
        return found

    async def warm_workers(self, model: str | None = None) -> list[Heartbeat]:
        """Workers that finished their warm-up and were heard from recently."""
        return [
            w
            for w in (await self.workers()).values()
            if w.warm and (model is None or w.model == model)
        ]

    async def _warm_for_submit(self, model: str) -> list[Heartbeat]:
        """`warm_workers(model)`, reused for `WARM_SEEN_S` once some were found: a scan
        of the worker keys on every submit costs round trips on the interactive hot
        path, and heartbeats are seconds apart anyway. Finding none is never reused,
        so a worker that has just warmed up is seen at once."""
        now = time.monotonic()
        seen = self._warm_seen.get(model)
        if seen is not None and now - seen[0] < WARM_SEEN_S:
            return seen[1]
        warm = await self.warm_workers(model)
        if warm:
            self._warm_seen[model] = (now, warm)
        else:
            self._warm_seen.pop(model, None)
        return warm

    async def queue_depth(self, model: str) -> int:
        return await self.admission.depth(model)
