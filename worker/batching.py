"""Cross-job batching: take more waiting prompt jobs, encode their images together.

`Gatherer` takes the messages; `BatchRunner` runs the task's own job and the taken
ones: cached images first, the rest through the image encoder in one forward pass,
then each job on its own through the job runner (worker/jobs.py).

Celery hands a worker one message at a time (prefetch 1, acks late: a dead worker
strands at most one job). To batch, the task holding that one job moves further
messages of waiting prompt jobs straight out of the Redis queues, atomically
(`LMOVE`), into this worker's *in-flight list*. A message leaves that list only
once its job has a terminal state, or goes back to the shared queue: either by
this worker (a job it will not run after all) or, if the worker dies holding it,
by any live worker's sweep of dead workers' lists (worker/runtime.py) — the same
path that empties a dead worker's private queue. So a batched job is never lost,
and the start script's attempt count still caps jobs that keep killing workers.

The gateway sends each job with task id = job id, so a message names its job in
its headers; bodies are never decoded here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np
import torch
from celery.exceptions import SoftTimeLimitExceeded

from sam2fleet.shared.errors import JobTimeout, Sam2FleetError
from sam2fleet.shared.images import decode_rgb
from sam2fleet.shared.queue import SEGMENT_TASK
from sam2fleet.shared.records import JobRecord
from sam2fleet.worker import admission, failures
from sam2fleet.worker.jobs import CacheKey, JobRunner, Outcome
from sam2fleet.worker.model import SegmentationModel
from sam2fleet.worker.pipeline import Encoded
from sam2fleet.worker.store import JobStore

log = logging.getLogger(__name__)

DECODE_THREADS = 4


@dataclass
class Taken:
    """A job taken into a batch, its Celery message held in the in-flight list."""

    job_id: str
    record: JobRecord
    message: bytes


class Gatherer:
    def __init__(
        self,
        store: JobStore,
        *,
        queues: list[str],
        shared_queue: str,
        inflight: str,
        max_size: int,
        wait_s: float,
        start: Callable[[str], JobRecord | None] | None = None,
    ) -> None:
        self.store = store
        # How a taken job is started: the job runner's start in a worker, so the
        # metrics count batched jobs too.
        self.start = start or store.start
        self.redis = store.redis
        self.queues = queues  # searched in order: this worker's own queue first
        self.shared_queue = shared_queue
        self.inflight = inflight
        self.max_size = max_size
        self.wait_s = wait_s

    def take(self, room: int) -> list[Taken]:
        """Up to `room` more prompt jobs, started (status running, attempt counted)."""
        room = min(room, self.max_size - 1)
        taken: list[Taken] = []
        deadline = time.monotonic() + self.wait_s
        exhausted: set[str] = set()
        while len(taken) < room:
            for queue in self.queues:
                while queue not in exhausted and len(taken) < room:
                    got = self._take_one(queue)
                    if got is None:
                        exhausted.add(queue)
                    elif got != "dropped":
                        taken.append(got)
            if len(taken) >= room or time.monotonic() >= deadline:
                break
            time.sleep(0.002)
            exhausted.clear()  # look again: more may have arrived while waiting
        return taken

    def _take_one(self, queue: str) -> Taken | Literal["dropped"] | None:
        """A started job; "dropped" when the message was dropped (its job needs no
        run); None when the queue is empty or its head is not ours to batch."""
        message = self.redis.lmove(queue, self.inflight, "RIGHT", "LEFT")
        if message is None:
            return None
        job_id = _job_id(message)
        mode = self.redis.hget(self.store.keys.job(job_id), "mode") if job_id else None
        if job_id is None or (mode is not None and mode != b"prompt"):
            # Not a prompt job (or not a job message at all): straight back to the
            # head of its queue for Celery to deliver as usual; stop looking there.
            self.redis.lmove(self.inflight, queue, "LEFT", "RIGHT")
            return None
        record = self.start(job_id)
        if record is None:  # cancelled, finished, expired or out of attempts
            self.done(message)
            return "dropped"
        return Taken(job_id, record, message)

    def done(self, message: bytes) -> None:
        """The job has its terminal state: its message is no longer needed."""
        self.store.retrying(lambda: self.redis.lrem(self.inflight, 1, message))

    def give_back(self, message: bytes) -> None:
        """Return a job this worker will not run after all to the shared queue's head."""

        def move() -> None:
            pipe = self.redis.pipeline(transaction=True)
            pipe.rpush(self.shared_queue, message)
            pipe.lrem(self.inflight, 1, message)
            pipe.execute()

        # Retried like the store's terminal writes: a Redis restart mid-batch must not
        # leave the job only in this process's memory (the list survives it anyway).
        self.store.retrying(move)


def _job_id(message: bytes) -> str | None:
    try:
        headers = json.loads(message)["headers"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(headers, dict) or headers.get("task") != SEGMENT_TASK:
        return None
    job_id = headers.get("id")
    return job_id if isinstance(job_id, str) and job_id else None


class BatchRunner:
    """Runs a prompt job together with the prompt jobs waiting behind it."""

    def __init__(self, runner: JobRunner, gatherer: Gatherer) -> None:
        self.runner = runner
        self.gatherer = gatherer

    def run(self, job_id: str, record: JobRecord) -> Outcome:
        """The task's own (started) job, with as many more as the batch takes now;
        alone when none are waiting."""
        taken = self.gatherer.take(self.gatherer.max_size - 1)
        if not taken:
            return self.runner.settle(job_id, record)
        return self._run_batch(job_id, record, taken)

    def _run_batch(self, job_id: str, record: JobRecord, taken: list[Taken]) -> Outcome:
        """Cached images answered first, the rest encoded in one forward pass, each job
        then decoded and written on its own. The task's own job always ends here with
        a terminal state; a taken job ends either so or back in the shared queue
        (never only in this process's memory)."""
        runner, gatherer = self.runner, self.gatherer
        messages = {t.job_id: t.message for t in taken}
        pending = [(job_id, record)] + [(t.job_id, t.record) for t in taken]
        outcomes: dict[str, Outcome] = {}
        log.info("job %s: batched with %d more prompt job(s)", job_id, len(taken))

        def finish(jobs: list[tuple[str, JobRecord]], encoded: dict[str, Encoded | None]) -> bool:
            """Run and write these jobs in order; False once one ran out of time."""
            for jid, rec in jobs:
                outcomes[jid] = runner.settle(jid, rec, encoded.get(jid))
                pending.remove((jid, rec))
                if jid in messages:
                    gatherer.done(messages.pop(jid))
                    runner.end(jid, outcomes[jid])
                if outcomes[jid] == "timeout":
                    return False
            return True

        try:
            # Clicks on images already embedded cost milliseconds; never make them
            # wait for the encoder pass over the others.
            cached = [j for j in pending if runner.cache_key(j[1]) in runner.model.cache]
            if finish(cached, {}):
                try:
                    by_image: dict[CacheKey, Encoded] | None = self._encode_pending(pending)
                except SoftTimeLimitExceeded:
                    by_image = None  # the task's own job fails below, the others go back
                if by_image is not None:
                    encoded = {jid: by_image.get(runner.cache_key(rec)) for jid, rec in pending}
                    finish(list(pending), encoded)
        finally:
            # Stopped early (a time limit): taken jobs left over run again elsewhere.
            # The task's own message is acknowledged when the task returns, so its
            # job must end here.
            for jid, _ in pending:
                if jid in messages:
                    gatherer.give_back(messages.pop(jid))
                    runner.end(jid, "given back")
                elif jid == job_id:
                    runner.fail(job_id, JobTimeout("the job's batch ran past its time limit"))
        return outcomes.get(job_id, "failed")

    def _encode_pending(self, pending: list[tuple[str, JobRecord]]) -> dict[CacheKey, Encoded]:
        """Decode each distinct image of the pending jobs once, encode them together.
        Anything that goes wrong here leaves the jobs to encode alone, where the error
        (a bad image, out of memory) is reported against the job it belongs to."""
        runner, model, settings = self.runner, self.runner.model, self.runner.settings
        loaders: dict[CacheKey, Callable[[], bytes | None]] = {}
        for jid, rec in pending:
            key = runner.cache_key(rec)
            if key in loaders or runner.store.status(jid) == "cancelled":
                continue
            loaders[key] = partial(runner.store.image_bytes, rec.owner, rec.image_id)
        images = decode_all(loaders, settings.max_image_pixels)
        if len(images) < 2 or not self._fits(len(images), pending[0][1]):
            return {}  # each job takes the ordinary path
        try:
            return encode_together(model, images, settings.embedding_cache_bytes > 0)
        except torch.OutOfMemoryError:
            log.warning(
                "batched encode of %d images ran out of memory; encoding alone", len(images)
            )
            failures.release_memory(model.cache)
            return {}
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:
            failures.exit_if_cuda_error(exc, pending[0][0], runner.store, runner.worker)
            log.exception("batched encode failed; encoding alone")
            return {}

    def _fits(self, images: int, record: JobRecord) -> bool:
        """Whether the encoder's pass over `images` fits the memory budget."""
        budget = self.runner.budget()
        if budget <= 0:
            return True
        model = self.runner.model
        need = admission.estimate_bytes(
            model.stamp.name,
            (0, 0),  # the encoder's share: the same for any image size
            record.spec,
            image_size=model.image_size,
            batch=images,
            precision=model.precision,
        )
        if need > budget:
            log.info("a batch of %d images would not fit the memory budget", images)
            return False
        return True


def encode_together(
    model: SegmentationModel,
    images: dict[CacheKey, tuple[np.ndarray, float]],
    cache: bool,
) -> dict[CacheKey, Encoded]:
    """One forward pass over every decoded image (keyed by cache key, with its decode
    seconds); each embedding is also cached when the cache is on."""
    keys = list(images)
    started = time.perf_counter()
    embeddings = model.embed_batch([images[k][0] for k in keys])
    embed_s = round(time.perf_counter() - started, 6)
    out = {}
    for key, embedding in zip(keys, embeddings, strict=True):
        if cache:
            model.cache.add(key, embedding)
        out[key] = Encoded(embedding, images[key][1], embed_s, len(keys))
    return out


def decode_all(
    loaders: dict[CacheKey, Callable[[], bytes | None]], max_pixels: int
) -> dict[CacheKey, tuple[np.ndarray, float]]:
    """Fetch and decode every image of a batch, several at once (Pillow releases the
    GIL while it decodes), so the host's cores prepare the batch in parallel while
    the device waits. Each decoded image with its decode seconds; an image that is
    gone or does not decode is left out (its job then fails on its own path)."""

    def one(load: Callable[[], bytes | None]) -> tuple[np.ndarray, float] | None:
        try:
            data = load()
        except Exception:  # Redis gone past its retries: the job's own path reports it
            log.warning("could not fetch an image for a batch", exc_info=True)
            return None
        if data is None:
            return None
        started = time.perf_counter()
        try:
            image = decode_rgb(data, max_pixels=max_pixels)
        except Sam2FleetError:
            return None
        return image, round(time.perf_counter() - started, 6)

    if not loaders:
        return {}
    with ThreadPoolExecutor(max_workers=min(DECODE_THREADS, len(loaders))) as pool:
        decoded = dict(zip(loaders, pool.map(one, loaders.values()), strict=True))
    return {key: item for key, item in decoded.items() if item is not None}
