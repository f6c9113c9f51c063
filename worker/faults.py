"""Test seam: faults injected at the model, keyed by image id in Redis.

Active only with `SAM2FLEET_FAULT_INJECTION=1` (refused in production). A test
writes `{prefix}:fault:{image_id}` before submitting an image; every job on that
image then meets the fault when it reaches the model:

    sleep:S        hold the job S seconds (to kill, stop or cancel it mid-run)
    stuck:S        hold it S seconds ignoring the soft time limit (as a long native
                   call would), so only the hard limit ends it
    crash          SIGKILL the process running the model
    oom            raise CUDA out-of-memory on every attempt
    oom_above:N    raise out-of-memory while automatic points_per_batch > N
    cuda_error     raise a CUDA error (not out-of-memory) on every attempt
    cuda_error_once  the same, once: the key is deleted first

Video jobs read the key of their video id instead:

    frame_sleep:S  hold each tracked frame S seconds (a video that outlasts a timeout
                   on any machine, however fast)

A starting pool process reads `{prefix}:fault:warmup` before it loads the model:

    hang           never finish the warm-up (as a deadlocked model load would)
    hang_once      the same, once: the key is deleted first, so a replacement warms up
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import redis
import torch
from celery.exceptions import SoftTimeLimitExceeded

from sam2fleet.shared.records import Keys
from sam2fleet.shared.schemas import JobSpec
from sam2fleet.worker.store import JobStore

log = logging.getLogger(__name__)

WARMUP = "warmup"  # the fault key's name in place of an image id


def inject(store: JobStore, image_id: str, spec: JobSpec) -> None:
    fault = store.fault(image_id)
    if not fault:
        return
    kind, _, arg = fault.partition(":")
    if kind == "sleep":
        time.sleep(float(arg))
    elif kind == "stuck":
        until = time.monotonic() + float(arg)
        while time.monotonic() < until:
            try:
                time.sleep(until - time.monotonic())
            except SoftTimeLimitExceeded:
                pass
    elif kind == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "oom" or (
        kind == "oom_above" and spec.mode == "auto" and spec.auto.points_per_batch > int(arg)
    ):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
    elif kind in ("cuda_error", "cuda_error_once"):
        if kind == "cuda_error_once":
            store.redis.delete(store.keys.fault(image_id))
        raise torch.AcceleratorError(
            "CUDA error: an illegal memory access was encountered (injected)"
        )


def frame_delay(store: JobStore, video_id: str) -> float:
    """Seconds to hold each tracked frame of a video job (`frame_sleep:S`), else 0."""
    fault = store.fault(video_id) or ""
    kind, _, arg = fault.partition(":")
    return float(arg) if kind == "frame_sleep" else 0.0


def hold_warmup(client: redis.Redis, keys: Keys) -> None:
    """Hang here for good when the warm-up fault is set (`hang`, `hang_once`)."""
    fault = client.get(keys.fault(WARMUP))
    kind = fault.decode() if fault else ""
    if kind not in ("hang", "hang_once"):
        return
    if kind == "hang_once":
        client.delete(keys.fault(WARMUP))
    log.warning("warm-up held by fault injection (%s) in pid %d", kind, os.getpid())
    threading.Event().wait()  # never set: only a signal ends this process
