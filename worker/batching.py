"""Cross-job batching: take more waiting prompt jobs, encode their images together.

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

import numpy as np

from sam2fleet.shared.errors import Sam2FleetError
from sam2fleet.shared.images import decode_rgb
from sam2fleet.shared.queue import SEGMENT_TASK
from sam2fleet.shared.records import JobRecord
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
    ) -> None:
        self.store = store
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
                    elif got is not False:
                        taken.append(got)
            if len(taken) >= room or time.monotonic() >= deadline:
                break
            time.sleep(0.002)
            exhausted.clear()  # look again: more may have arrived while waiting
        return taken

    def _take_one(self, queue: str) -> Taken | None | bool:
        """A started job; False when the message was dropped (its job needs no run);
        None when the queue is empty or its head is not ours to batch."""
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
        record = self.store.start(job_id)
        if record is None:  # cancelled, finished, expired or out of attempts
            self.done(message)
            return False
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


def encode_together(
    model: SegmentationModel,
    images: dict[tuple[str, ...], tuple[np.ndarray, float]],
    cache: bool,
) -> dict[tuple[str, ...], Encoded]:
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
    loaders: dict[tuple[str, ...], Callable[[], bytes | None]], max_pixels: int
) -> dict[tuple[str, ...], tuple[np.ndarray, float]]:
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
