"""What the worker does about device failures: out of memory and other CUDA errors.

Every failure kind, and where it is handled:
- a bad job (bad image, too large, past its soft time limit): the job fails with its
  error type (worker/jobs.py, `JobRunner.settle`);
- CUDA out of memory: memory is released and automatic mode runs again with half
  the points per batch, down to `oom_min_points_per_batch`; then the job fails with
  `input_too_large` (`release_memory`, `with_less_work`);
- any other CUDA error: the process exits unacknowledged (`exit_if_cuda_error`): a
  CUDA context cannot be trusted after one, so the message is requeued and the pool
  starts a fresh process;
- the process dies (killed, crashed): Celery requeues the message (acks late,
  reject on worker lost); `max_attempts` deliveries later the start script fails
  the job with `worker_crashed`.
"""

from __future__ import annotations

import gc
import logging
import os

import torch

from sam2fleet.shared.errors import InputTooLarge
from sam2fleet.shared.schemas import JobSpec
from sam2fleet.worker.embed_cache import EmbeddingCache
from sam2fleet.worker.store import JobStore

log = logging.getLogger(__name__)

# Exit code of a pool process that stopped itself after a CUDA error.
CUDA_ERROR_EXIT = 70


def is_cuda_error(exc: BaseException) -> bool:
    """A CUDA error other than out of memory (which the job survives)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return False
    return isinstance(exc, torch.AcceleratorError) or "CUDA error" in str(exc)


def exit_if_cuda_error(exc: BaseException, job_id: str, store: JobStore, worker: str) -> None:
    """Stop this process at once after a CUDA error; return for any other error."""
    if not is_cuda_error(exc):
        return
    log.critical("job %s: CUDA error, replacing this worker process: %s", job_id, exc)
    # Without its heartbeat, the jobs this process took into a batch are swept back
    # to the shared queue at once instead of after the heartbeat's TTL.
    store.forget_worker(worker)
    logging.shutdown()
    os._exit(CUDA_ERROR_EXIT)  # unacknowledged: the job is redelivered


def release_memory(cache: EmbeddingCache) -> None:
    """Give back what can be given before running again with less work."""
    cache.clear()  # cached embeddings hold device memory too
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def with_less_work(spec: JobSpec, floor: int) -> JobSpec:
    """The spec with half the points per batch; `InputTooLarge` below `floor` or for a
    prompt job (nothing to lower there)."""
    ppb = spec.auto.points_per_batch
    if spec.mode != "auto" or ppb // 2 < floor:
        raise InputTooLarge(
            "the job does not fit in GPU memory even with the least work in "
            "flight; send a smaller image or fewer crop layers"
        )
    return spec.model_copy(
        update={"auto": spec.auto.model_copy(update={"points_per_batch": ppb // 2})}
    )
