"""The segmentation task: fetch the job, run the pipeline, write the result once.

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
from typing import Any

import torch
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from shared.errors import InputTooLarge, InvalidImage, Sam2FleetError
from shared.queue import SEGMENT_TASK
from shared.schemas import JobSpec
from worker import faults, runtime
from worker.pipeline import run_job

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
        rt.store.succeed(job_id, _run(rt, job_id, record))
        return "succeeded"
    except JobCancelled:
        log.info("job %s cancelled while running; stopped at a safe point", job_id)
        return "cancelled"
    except Sam2FleetError as exc:
        rt.store.fail(job_id, exc.to_dict())
        return "failed"
    except SoftTimeLimitExceeded:
        rt.store.fail(job_id, {"type": "timeout", "message": "the job ran past its time limit"})
        return "failed"
    except Exception as exc:
        if _is_cuda_error(exc):
            log.critical("job %s: CUDA error, replacing this worker process: %s", job_id, exc)
            rt.store.forget_worker(rt.name)
            logging.shutdown()
            os._exit(CUDA_ERROR_EXIT)  # unacknowledged: the job is redelivered
        log.exception("job %s failed", job_id)
        rt.store.fail(job_id, {"type": "internal", "message": f"{type(exc).__name__}: {exc}"})
        return "failed"
    finally:
        rt.clearer.after_batch()


def _run(rt: runtime.Runtime, job_id: str, record: dict[str, str]) -> dict[str, Any]:
    spec = JobSpec.model_validate_json(record["spec"])
    owner, image_id = record.get("owner", "anon"), record["image_id"]

    def load_image() -> bytes:
        data = rt.store.image_bytes(owner, image_id)
        if data is None:
            raise InvalidImage("the job's image expired before a worker took the job")
        return data

    # Keyed by owner too: one key's upload never answers another key's job.
    cache_key = (
        (rt.model.stamp.name, owner, image_id) if rt.settings.embedding_cache_bytes > 0 else None
    )
    notes: list[str] = []
    while True:
        checkpoint = _checkpoint(rt, job_id, image_id, spec)
        try:
            result = run_job(
                rt.model,
                spec,
                image_id,
                load_image,
                max_pixels=rt.settings.max_image_pixels,
                queue_s=round(time.time() - float(record["created_at"]), 6),
                checkpoint=checkpoint,
                cache_key=cache_key,
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
