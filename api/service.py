"""What the gateway does with Redis and the queue: no HTTP here.

A submit is checked in full first (image, model, prompts, a warm worker, then a
slot reserved atomically by api/admission.py), and only then written, in this
order: image, job record, queue message. If the message cannot be sent the record
is removed again, so a client told 503 never leaves a job behind that nobody will
run; the image stays for its TTL, content-addressed, for the client's retry.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from functools import partial
from typing import Any

import anyio
import redis.asyncio as aredis
from celery import Celery
from redis.exceptions import RedisError

from sam2fleet.api import metrics
from sam2fleet.api.admission import Admission
from sam2fleet.shared.errors import (
    Conflict,
    IdempotencyConflict,
    InvalidInput,
    InvalidPrompt,
    JobError,
    JobTimeout,
    NotFound,
    NoWorkerReady,
    Sam2FleetError,
    Unavailable,
)
from sam2fleet.shared.images import ProbedImage, probe_image, verify_decodable
from sam2fleet.shared.models import MODELS
from sam2fleet.shared.queue import SEGMENT_TASK
from sam2fleet.shared.records import CANCEL_SCRIPT, Heartbeat, JobRecord, Keys
from sam2fleet.shared.schemas import ErrorBody, JobSpec, JobStatus, Prompt
from sam2fleet.shared.settings import Settings


class JobService:
    def __init__(self, settings: Settings, client: aredis.Redis, celery: Celery) -> None:
        self.settings = settings
        self.redis = client
        self.celery = celery
        self.keys = Keys(settings.key_prefix)
        self._cancel = client.register_script(CANCEL_SCRIPT)
        self.admission = Admission(settings, client)

    # --- images ------------------------------------------------------------------

    def probe(self, data: bytes) -> ProbedImage:
        """Everything an image must pass before anything is stored: a known format,
        size limits read from its header, and a full decode."""
        probed = probe_image(data, max_pixels=self.settings.max_image_pixels)
        verify_decodable(data)
        return probed

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
        fields = await self.redis.hmget(
            self.keys.image(owner, image_id), "width", "height", "format"
        )
        if fields[0] is None:
            return None
        return ProbedImage(image_id, fields[2].decode(), int(fields[0]), int(fields[1]))

    async def _keep_image(self, image: ProbedImage, owner: str, data: bytes | None) -> None:
        """Store the request's image, or keep an uploaded one at least as long as a
        fresh upload now that a job will read it."""
        if data is not None:
            await self._write_image(data, image, owner)
        elif not await self.redis.expire(
            self.keys.image(owner, image.image_id), self.settings.image_ttl_s
        ):
            raise InvalidInput(f"image_id {image.image_id} is unknown or expired; upload it again")

    # --- jobs ----------------------------------------------------------------------

    async def submit(
        self,
        spec: JobSpec,
        image: ProbedImage,
        owner: str,
        idempotency_key: str | None = None,
        data: bytes | None = None,
    ) -> dict[str, Any]:
        """Queue a job on `image`: its bytes in `data` when the request brought them,
        else an uploaded image (`image_info`). Every check (model, prompts, a warm
        worker, room in Redis and in the queue) comes before anything is stored, so a
        refused request leaves nothing behind."""
        model = spec.model or self.settings.model
        if model not in MODELS:
            raise InvalidInput(f"unknown model {model!r}; served: {', '.join(sorted(MODELS))}")
        check_prompts(spec.prompts, image, self.settings)
        spec = spec.model_copy(update={"model": model})
        job_id = uuid.uuid4().hex
        idem_key = None
        if idempotency_key is not None:
            idem_key, existing = await self._claim_idempotency(
                owner, idempotency_key, f"{image.image_id}:{spec.model_dump_json()}", job_id
            )
            if existing is not None:
                return existing
        try:
            # One heartbeat scan per submit: readiness and affinity both use it.
            warm = await self.warm_workers(model)
            if not warm:
                raise NoWorkerReady(f"no worker serving {model} is ready; retry shortly")
            reservation = await self.admission.reserve(model, len(data or b""))
            try:
                await self._keep_image(image, owner, data)
                queue = await self._route(spec, owner, image.image_id, model, warm)
                return await self._enqueue(job_id, spec, image, owner, model, queue)
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

    async def _enqueue(
        self, job_id: str, spec: JobSpec, image: ProbedImage, owner: str, model: str, queue: str
    ) -> dict[str, Any]:
        record = JobRecord.new(job_id, spec, model, image.image_id, owner)
        key = self.keys.job(job_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping=record.to_redis())
        pipe.expire(key, self.settings.job_ttl_s)
        await pipe.execute()
        try:
            await anyio.to_thread.run_sync(partial(self._send, job_id, queue))
        except Exception as exc:
            await self.redis.delete(key)
            raise Unavailable(f"could not queue the job: {type(exc).__name__}") from None
        metrics.job_submitted(job_id, model, spec.mode)
        return record.public()

    async def _route(
        self, spec: JobSpec, owner: str, image_id: str, model: str, warm: list[Heartbeat]
    ) -> str:
        """The worker holding this image's embedding if it is alive and not backed up
        (image affinity), else the model's shared queue."""
        shared = self.keys.queue(model)
        if spec.mode != "prompt" or self.settings.affinity_ttl_s <= 0:
            return shared
        held_by = await self.redis.get(self.keys.affinity(model, owner, image_id))
        if held_by is None:
            return shared
        queue = str(held_by.decode())
        if (
            queue in {w.queue for w in warm}
            and await self.redis.llen(queue) < self.settings.affinity_max_backlog
        ):
            return queue
        return shared

    def _send(self, job_id: str, queue: str, **options: Any) -> None:
        """`options`: more of Celery's `send_task` options (a video job's time limits)."""
        self.celery.send_task(
            SEGMENT_TASK,
            args=[job_id],
            queue=queue,
            **options,
            task_id=job_id,  # Celery's own log lines then name the job (shared/logs.py)
            retry=True,
            retry_policy={
                "max_retries": 2,
                "interval_start": 0.1,
                "interval_step": 0.2,
                "interval_max": 0.5,
            },
        )

    async def get(self, job_id: str, owner: str, wait_s: float = 0.0) -> dict[str, Any]:
        record = await self._record(job_id, owner)
        if not record.terminal and wait_s > 0:
            record = await self._wait(job_id, owner, min(wait_s, self.settings.max_wait_s))
        result = None
        if record.status is JobStatus.succeeded:
            result = await self.redis.get(self.keys.result(job_id))
        return record.public(result)

    async def _record(self, job_id: str, owner: str) -> JobRecord:
        record = JobRecord.from_redis(await self.redis.hgetall(self.keys.job(job_id)))
        # Another owner's job is answered exactly like a missing one: 404.
        if record is None or record.owner != owner:
            raise NotFound(f"no job {job_id} (unknown or expired)")
        return record

    async def _wait(self, job_id: str, owner: str, wait_s: float) -> JobRecord:
        # Subscribe before re-reading, so a finish between the two is not missed.
        async with self.redis.pubsub() as pubsub:
            await pubsub.subscribe(self.keys.done(job_id))
            record = await self._record(job_id, owner)
            deadline = time.monotonic() + wait_s
            while not record.terminal:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                await pubsub.get_message(ignore_subscribe_messages=True, timeout=min(left, 1.0))
                record = await self._record(job_id, owner)
        return record

    async def submit_and_wait(
        self, spec: JobSpec, image: ProbedImage, owner: str, deadline: float, data: bytes | None
    ) -> dict[str, Any]:
        """Submit, then wait until the job ends or the `deadline` (time.monotonic())
        passes: the succeeded job as `get` returns it. A job still unfinished then is
        cancelled (nobody will collect it) and `JobTimeout` raised; a failed job
        raises `JobError` with its own error type."""
        timeout = deadline - time.monotonic()
        job = await self.submit(spec, image, owner, data=data)
        while True:
            job = await self.get(job["id"], owner, max(0.0, deadline - time.monotonic()))
            if JobStatus(job["status"]).terminal or time.monotonic() >= deadline:
                break
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

    async def queue_depth(self, model: str) -> int:
        return await self.admission.depth(model)


def check_prompts(prompts: list[Prompt], image: ProbedImage, settings: Settings) -> None:
    """Geometry that needs the image size; shapes were checked by the schema."""
    if len(prompts) > settings.max_objects:
        raise InvalidPrompt(f"{len(prompts)} prompts; at most {settings.max_objects} per job")
    w, h = image.width, image.height
    for i, prompt in enumerate(prompts):
        if prompt.points is not None:
            if len(prompt.points) > settings.max_points:
                raise InvalidPrompt(
                    f"prompts[{i}] has {len(prompt.points)} points; at most {settings.max_points}"
                )
            for x, y in prompt.points:
                if not (0 <= x <= w and 0 <= y <= h):
                    raise InvalidPrompt(
                        f"prompts[{i}] point [{x}, {y}] lies outside the {w}x{h} image"
                    )
        if prompt.box is not None:
            x1, y1, x2, y2 = prompt.box
            if x1 < 0 or y1 < 0 or x2 > w or y2 > h:
                raise InvalidPrompt(
                    f"prompts[{i}] box {json.dumps(prompt.box)} lies outside the {w}x{h} image"
                )
