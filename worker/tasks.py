"""The segmentation task: fetch the job, run the pipeline, write the result once.

Prompt jobs waiting in the queue are taken into the same task and encoded in one
batched forward pass (worker/batching.py). Each job is first admitted by its
predicted memory (worker/admission.py).

Failure handling, by kind:
- a bad job (bad image, too large, timeout): the job fails with its error type;
- CUDA out of memory: automatic mode retries with half the points per batch, down
  to `oom_min_points_per_batch`, then fails with `input_too_large`;
- any other CUDA error: the process exits (a CUDA context cannot be trusted after
  one); the message is requeued and the pool starts a fresh process;
- the process dies (killed, crashed): Celery requeues the message (acks late,
  reject on worker lost); `max_attempts` deliveries later the job fails.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from sam2fleet.shared.errors import InputTooLarge, InvalidImage, JobTimeout, Sam2FleetError
from sam2fleet.shared.queue import SEGMENT_TASK
from sam2fleet.shared.records import JobRecord
from sam2fleet.shared.schemas import JobSpec
from sam2fleet.worker import admission, batching, faults, pipeline, runtime, video_jobs

log = logging.getLogger(__name__)

# Exit code of a pool process that stopped itself after a CUDA error.
CUDA_ERROR_EXIT = 70


class JobCancelled(Exception):
    """Raised at a safe point when the job was cancelled while running."""


@shared_task(name=SEGMENT_TASK, ignore_result=True)
def segment(job_id: str) -> str:
    rt = runtime.current()
    record = rt.store.start(job_id)
    if record is None:
        log.info("job %s skipped: gone, cancelled, finished or out of attempts", job_id)
        return "skipped"
    try:
        if record.mode == "video":  # worker/video_jobs.py; clicks are answered between frames
            hooks = video_jobs.Hooks(partial(_settle, rt), partial(_run, rt), JobCancelled)
            return video_jobs.run(rt, job_id, record, hooks)
        if record.mode == "prompt" and rt.gatherer is not None:
            taken = rt.gatherer.take(rt.gatherer.max_size - 1)
            if taken:
                return _run_batch(rt, job_id, record, taken)
        outcome = _settle(rt, job_id, lambda: _run(rt, job_id, record))
        return "failed" if outcome == "timeout" else outcome
    finally:
        rt.clearer.after_batch()


def _settle(rt: runtime.Runtime, job_id: str, compute: Callable[[], dict[str, Any]]) -> str:
    """Run one job and write its terminal state; the outcome, "timeout" included."""
    try:
        rt.store.succeed(job_id, compute())
        return "succeeded"
    except JobCancelled:
        log.info("job %s cancelled while running; stopped at a safe point", job_id)
        return "cancelled"
    except Sam2FleetError as exc:
        rt.store.fail(job_id, exc.to_body())
        return "failed"
    except SoftTimeLimitExceeded:
        rt.store.fail(job_id, JobTimeout("the job ran past its time limit").to_body())
        return "timeout"
    except Exception as exc:
        if _is_cuda_error(exc):
            _exit_after_cuda_error(rt, job_id, exc)
        log.exception("job %s failed", job_id)
        rt.store.fail(job_id, Sam2FleetError(f"{type(exc).__name__}: {exc}").to_body())
        return "failed"


def _exit_after_cuda_error(rt: runtime.Runtime, job_id: str, exc: BaseException) -> None:
    log.critical("job %s: CUDA error, replacing this worker process: %s", job_id, exc)
    rt.store.forget_worker(rt.name)  # batched jobs' messages are swept back at once
    logging.shutdown()
    os._exit(CUDA_ERROR_EXIT)  # unacknowledged: the job is redelivered


def _run_batch(
    rt: runtime.Runtime, job_id: str, record: JobRecord, taken: list[batching.Taken]
) -> str:
    """The task's own job plus `taken` ones: cached images answered first, the rest
    encoded in one forward pass, each job then decoded and written on its own. The
    task's own job always ends here with a terminal state; a taken job ends either
    so or back in the shared queue (never only in this process's memory)."""
    gatherer = rt.gatherer
    assert gatherer is not None
    messages = {t.job_id: t.message for t in taken}
    pending = [(job_id, record)] + [(t.job_id, t.record) for t in taken]
    outcomes: dict[str, str] = {}
    log.info("job %s: batched with %d more prompt job(s)", job_id, len(taken))

    def finish(
        jobs: list[tuple[str, JobRecord]], encoded: dict[str, pipeline.Encoded | None]
    ) -> bool:
        """Run and write these jobs in order; False once one ran out of time."""
        for jid, rec in jobs:
            outcomes[jid] = _settle(rt, jid, partial(_run, rt, jid, rec, encoded.get(jid)))
            pending.remove((jid, rec))
            if jid in messages:
                gatherer.done(messages.pop(jid))
                rt.store.task_ended(jid, outcomes[jid])
            if outcomes[jid] == "timeout":
                return False
        return True

    try:
        # Clicks on images already embedded cost milliseconds; never make them wait
        # for the encoder pass over the others.
        if finish([j for j in pending if _cache_key(rt, j[1]) in rt.model.cache], {}):
            try:
                by_image = _encode_pending(rt, pending)
            except SoftTimeLimitExceeded:
                by_image = None  # the task's own job fails below, the others go back
            if by_image is not None:
                finish(list(pending), {j: by_image.get(_cache_key(rt, r)) for j, r in pending})
    finally:
        # Stopped early (a time limit): taken jobs left over run again elsewhere. The
        # task's own message is acknowledged when the task returns, so its job must
        # end here.
        for jid, _ in pending:
            if jid in messages:
                gatherer.give_back(messages.pop(jid))
                rt.store.task_ended(jid, "given back")
            elif jid == job_id:
                rt.store.fail(
                    job_id, JobTimeout("the job's batch ran past its time limit").to_body()
                )
    own = outcomes.get(job_id, "failed")
    return "failed" if own == "timeout" else own


def _encode_pending(
    rt: runtime.Runtime, pending: list[tuple[str, JobRecord]]
) -> dict[tuple[str, ...], pipeline.Encoded]:
    """Decode each distinct image of the pending jobs once, encode them together.
    Anything that goes wrong here leaves the jobs to encode alone, where the error
    (a bad image, out of memory) is reported against the job it belongs to."""
    loaders: dict[tuple[str, ...], Callable[[], bytes | None]] = {}
    for jid, rec in pending:
        key = _cache_key(rt, rec)
        if key in loaders or rt.store.status(jid) == "cancelled":
            continue
        loaders[key] = partial(rt.store.image_bytes, rec.owner, rec.image_id)
    images = batching.decode_all(loaders, rt.settings.max_image_pixels)
    if len(images) < 2:
        return {}  # nothing to share: each job takes the ordinary path
    budget = _budget(rt)
    if budget > 0:
        spec = pending[0][1].spec
        need = admission.estimate_bytes(
            rt.model.stamp.name,
            (0, 0),  # the encoder's share: the same for any image size
            spec,
            image_size=rt.model.image_size,
            batch=len(images),
            precision=rt.model.precision,
        )
        if need > budget:
            log.info("a batch of %d images would not fit the memory budget", len(images))
            return {}
    try:
        return batching.encode_together(rt.model, images, rt.settings.embedding_cache_bytes > 0)
    except torch.OutOfMemoryError:
        log.warning("batched encode of %d images ran out of memory; encoding alone", len(images))
        _release_memory(rt)
        return {}
    except SoftTimeLimitExceeded:
        raise
    except Exception as exc:
        if _is_cuda_error(exc):
            _exit_after_cuda_error(rt, pending[0][0], exc)
        log.exception("batched encode failed; encoding alone")
        return {}


def _cache_key(rt: runtime.Runtime, record: JobRecord) -> tuple[str, ...]:
    # Keyed by owner too: one key's upload never answers another key's job.
    return (rt.model.stamp.name, record.owner, record.image_id)


def _run(
    rt: runtime.Runtime,
    job_id: str,
    record: JobRecord,
    encoded: pipeline.Encoded | None = None,
) -> dict[str, Any]:
    spec = record.spec
    owner, image_id = record.owner, record.image_id

    def load_image() -> bytes:
        data = rt.store.image_bytes(owner, image_id)
        if data is None:
            raise InvalidImage("the job's image expired before a worker took the job")
        return data

    cache_key = _cache_key(rt, record) if rt.settings.embedding_cache_bytes > 0 else None
    spec, notes = _admit(rt, spec, owner, image_id)
    while True:
        checkpoint = _checkpoint(rt, job_id, image_id, spec)
        try:
            result = pipeline.run_job(
                rt.model,
                spec,
                image_id,
                load_image,
                max_pixels=rt.settings.max_image_pixels,
                queue_s=round(time.time() - record.created_at, 6),
                checkpoint=checkpoint,
                cache_key=cache_key,
                encoded=encoded,
            )
        except torch.OutOfMemoryError:
            _release_memory(rt)
            spec = _with_less_work(spec, rt.settings.oom_min_points_per_batch)
            notes.append(
                f"out of memory; retried with points_per_batch={spec.auto.points_per_batch}"
            )
            log.warning("job %s: %s", job_id, notes[-1])
            continue
        result["notes"] = notes + result.get("notes", [])
        if spec.mode == "prompt":
            rt.claim_affinity(owner, image_id)
        return result


def _budget(rt: runtime.Runtime) -> int:
    # Per job, not once: what the model and the embedding cache hold keeps changing.
    return admission.device_budget_bytes(
        rt.model.device, rt.settings.gpu_memory_fraction, rt.settings.gpu_memory_budget_bytes
    )


def _admit(
    rt: runtime.Runtime, spec: JobSpec, owner: str, image_id: str
) -> tuple[JobSpec, list[str]]:
    """Admission by predicted memory: the spec to run (automatic mode may get fewer
    points per batch) and notes saying so; `InputTooLarge` when nothing fits."""
    budget = _budget(rt)
    if budget <= 0:
        return spec, []
    hw = rt.store.image_hw(owner, image_id)
    if hw is None:
        return spec, []  # the image is gone; fetching it fails the job with that reason
    return admission.admit(
        spec,
        hw,
        budget,
        model_name=rt.model.stamp.name,
        image_size=rt.model.image_size,
        min_points_per_batch=rt.settings.oom_min_points_per_batch,
        precision=rt.model.precision,
        fast_auto=rt.settings.fast_auto,
    )


def _checkpoint(
    rt: runtime.Runtime, job_id: str, image_id: str, spec: JobSpec
) -> Callable[[str], None]:
    def checkpoint(stage: str) -> None:
        if rt.store.status(job_id) == "cancelled":
            raise JobCancelled
        if stage == "embed" and rt.settings.fault_injection:
            faults.inject(rt.store, image_id, spec)

    return checkpoint


def _with_less_work(spec: JobSpec, floor: int) -> JobSpec:
    ppb = spec.auto.points_per_batch
    if spec.mode != "auto" or ppb // 2 < floor:
        raise InputTooLarge(
            "the job does not fit in GPU memory even with the least work in "
            "flight; send a smaller image or fewer crop layers"
        )
    return spec.model_copy(
        update={"auto": spec.auto.model_copy(update={"points_per_batch": ppb // 2})}
    )


def _release_memory(rt: runtime.Runtime) -> None:
    rt.model.cache.clear()  # cached embeddings hold device memory too
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _is_cuda_error(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return False
    return isinstance(exc, torch.AcceleratorError) or "CUDA error" in str(exc)
