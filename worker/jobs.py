"""Running one job: start it, admit it by memory, run the pipeline, write its end once.

`JobRunner.settle` is the whole life of a job inside a worker: admission by predicted
memory (worker/admission.py), the pipeline (worker/pipeline.py) with a checkpoint at
each safe point (cancellation, injected faults), the out-of-memory retry with less
work (worker/failures.py), and one terminal write (worker/store.py). The observer
(worker/metrics.py in a running worker) hears of each job at its start, its terminal
write and its task's end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Literal, Protocol

import torch
from celery.exceptions import SoftTimeLimitExceeded

from sam2fleet.shared.errors import InvalidImage, JobTimeout, Sam2FleetError
from sam2fleet.shared.records import JobRecord
from sam2fleet.shared.schemas import ErrorBody, JobSpec
from sam2fleet.shared.settings import Settings
from sam2fleet.worker import admission, failures, faults
from sam2fleet.worker.model import SegmentationModel
from sam2fleet.worker.pipeline import Checkpoint, Encoded, run_job
from sam2fleet.worker.store import JobStore

log = logging.getLogger(__name__)

# How a job's run ended. "timeout": failed past the soft time limit, which also ends
# a batch (worker/batching.py); "given back": returned to the queue unrun.
Outcome = Literal["succeeded", "failed", "cancelled", "timeout", "given back"]

CacheKey = tuple[str, ...]
CLAIMS_KEPT = 4096  # affinity claims remembered, oldest forgotten first


class JobCancelled(Exception):
    """Raised at a safe point when the job was cancelled while running."""


class JobObserver(Protocol):
    """What watches the worker's jobs (its metrics): told of each job's start, its
    terminal write (whether Redis accepted it) and its task's end, and of each
    heartbeat written."""

    def started(self, record: JobRecord) -> None: ...
    def not_started(self, job_id: str) -> None: ...
    def succeeded(self, job_id: str, result: dict[str, Any], written: bool) -> None: ...
    def failed(self, job_id: str, error: ErrorBody, written: bool) -> None: ...
    def ended(self, job_id: str, outcome: str) -> None: ...
    def heartbeat(self) -> None: ...


class NoObserver:
    """Observes nothing: a worker built without metrics (tests)."""

    def started(self, record: JobRecord) -> None:
        pass

    def not_started(self, job_id: str) -> None:
        pass

    def succeeded(self, job_id: str, result: dict[str, Any], written: bool) -> None:
        pass

    def failed(self, job_id: str, error: ErrorBody, written: bool) -> None:
        pass

    def ended(self, job_id: str, outcome: str) -> None:
        pass

    def heartbeat(self) -> None:
        pass


class JobRunner:
    def __init__(
        self,
        settings: Settings,
        model: SegmentationModel,
        store: JobStore,
        observer: JobObserver,
        *,
        worker: str,
        queue: str = "",
    ) -> None:
        self.settings = settings
        self.model = model
        self.store = store
        self.observer = observer
        self.worker = worker  # the heartbeat's name, forgotten on a CUDA error
        self.queue = queue  # this worker's private queue (image affinity)
        self._claimed: dict[tuple[str, str], float] = {}  # (owner, image) -> claimed at

    def start(self, job_id: str) -> JobRecord | None:
        """Mark the job running; None when it is gone, cancelled, finished or out of
        attempts (the start script fails it then)."""
        record = self.store.start(job_id)
        if record is None:
            log.info("job %s skipped: gone, cancelled, finished or out of attempts", job_id)
            self.observer.not_started(job_id)
        else:
            self.observer.started(record)
        return record

    def settle(self, job_id: str, record: JobRecord, encoded: Encoded | None = None) -> Outcome:
        """Run a started job and write its terminal state (none when cancelled)."""
        return self.settle_with(job_id, partial(self._compute, job_id, record, encoded))

    def settle_with(self, job_id: str, compute: Callable[[], dict[str, Any]]) -> Outcome:
        """Write the terminal state of a started job whose result `compute` makes: the
        same failure handling for every kind of job (a video job brings its own)."""
        try:
            self.succeed(job_id, compute())
            return "succeeded"
        except JobCancelled:
            log.info("job %s cancelled while running; stopped at a safe point", job_id)
            return "cancelled"
        except Sam2FleetError as exc:
            self.fail(job_id, exc)
            return "failed"
        except SoftTimeLimitExceeded:
            self.fail(job_id, JobTimeout("the job ran past its time limit"))
            return "timeout"
        except Exception as exc:
            failures.exit_if_cuda_error(exc, job_id, self.store, self.worker)
            log.exception("job %s failed", job_id)
            self.fail(job_id, Sam2FleetError(f"{type(exc).__name__}: {exc}"))
            return "failed"

    def succeed(self, job_id: str, result: dict[str, Any]) -> None:
        written = self.store.succeed(job_id, result)
        # One line per result actually written: the failover tests and the chaos run
        # count these across workers, independently of what Redis kept.
        log.info("job %s: %s", job_id, "result written" if written else "ended already")
        self.observer.succeeded(job_id, result, written)

    def fail(self, job_id: str, error: Sam2FleetError) -> None:
        body = error.to_body()
        self.observer.failed(job_id, body, self.store.fail(job_id, body))

    def end(self, job_id: str, outcome: Outcome) -> None:
        """The job's task is over (or the job left this worker's batch)."""
        self.observer.ended(job_id, outcome)

    def cache_key(self, record: JobRecord) -> CacheKey:
        # Keyed by owner too: one key's upload never answers another key's job.
        return (self.model.stamp.name, record.owner, record.image_id)

    def budget(self) -> int:
        """Device bytes a job may use now; 0: no limit."""
        # Per job, not once: what the model and the embedding cache hold keeps changing.
        return admission.device_budget_bytes(
            self.model.device,
            self.settings.gpu_memory_fraction,
            self.settings.gpu_memory_budget_bytes,
        )

    def _compute(self, job_id: str, record: JobRecord, encoded: Encoded | None) -> dict[str, Any]:
        owner, image_id = record.owner, record.image_id

        def load_image() -> bytes:
            data = self.store.image_bytes(owner, image_id)
            if data is None:
                raise InvalidImage("the job's image expired before a worker took the job")
            return data

        cache_key = self.cache_key(record) if self.settings.embedding_cache_bytes > 0 else None
        spec, notes = self._admit(record.spec, owner, image_id)
        while True:
            try:
                result = run_job(
                    self.model,
                    spec,
                    image_id,
                    load_image,
                    max_pixels=self.settings.max_image_pixels,
                    queue_s=round(time.time() - record.created_at, 6),
                    checkpoint=self._checkpoint(job_id, image_id, spec),
                    cache_key=cache_key,
                    encoded=encoded,
                    job_id=job_id,
                )
            except torch.OutOfMemoryError:
                failures.release_memory(self.model.cache)
                spec = failures.with_less_work(spec, self.settings.oom_min_points_per_batch)
                notes.append(
                    f"out of memory; retried with points_per_batch={spec.auto.points_per_batch}"
                )
                log.warning("job %s: %s", job_id, notes[-1])
                continue
            result["notes"] = notes + result.get("notes", [])
            if spec.mode == "prompt":
                self._claim_affinity(owner, image_id)
            return result

    def _admit(self, spec: JobSpec, owner: str, image_id: str) -> tuple[JobSpec, list[str]]:
        """Admission by predicted memory: the spec to run (automatic mode may get fewer
        points per batch) and notes saying so; `InputTooLarge` when nothing fits."""
        budget = self.budget()
        if budget <= 0:
            return spec, []
        hw = self.store.image_hw(owner, image_id)
        if hw is None:
            return spec, []  # the image is gone; fetching it fails the job with that reason
        return admission.admit(
            spec,
            hw,
            budget,
            model_name=self.model.stamp.name,
            image_size=self.model.image_size,
            min_points_per_batch=self.settings.oom_min_points_per_batch,
            precision=self.model.precision,
            fast_auto=self.settings.fast_auto,
        )

    def _checkpoint(self, job_id: str, image_id: str, spec: JobSpec) -> Checkpoint:
        def checkpoint(stage: str) -> None:
            if self.store.status(job_id) == "cancelled":
                raise JobCancelled
            if stage == "embed" and self.settings.fault_injection:
                faults.inject(self.store, image_id, spec)

        return checkpoint

    def _claim_affinity(self, owner: str, image_id: str) -> None:
        # The embedding is on this worker now: the gateway may route the image's next
        # prompt jobs to its private queue. The claim is written before the result, so
        # the next click already follows it; renewed once half its TTL has passed, not
        # on every click (a round trip saved on the interactive hot path).
        ttl = self.settings.affinity_ttl_s
        if ttl <= 0 or not self.queue:
            return
        now = time.monotonic()
        if now - self._claimed.get((owner, image_id), -ttl) < ttl / 2:
            return
        self.store.claim_affinity(self.model.stamp.name, owner, image_id, self.queue, ttl)
        self._claimed[(owner, image_id)] = now
        if len(self._claimed) > CLAIMS_KEPT:
            self._claimed.pop(next(iter(self._claimed)))
