"""Per-process worker state: the resident model, the job store, the job runner, the
heartbeat.

Created once in the pool process (`start`), never at import, so importing the
task module stays cheap and a replaced child process loads its own model.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field

import redis
import torch

from sam2fleet.shared import redis_clients
from sam2fleet.shared.records import Heartbeat, Keys
from sam2fleet.shared.settings import Settings
from sam2fleet.worker import faults
from sam2fleet.worker.batching import BatchRunner, Gatherer
from sam2fleet.worker.gpu import CacheClearer
from sam2fleet.worker.jobs import JobObserver, JobRunner, NoObserver
from sam2fleet.worker.metrics import observe
from sam2fleet.worker.model import SegmentationModel
from sam2fleet.worker.observability import node_name
from sam2fleet.worker.store import JobStore
from sam2fleet.worker.takeover import Takeover

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    model: SegmentationModel
    store: JobStore
    clearer: CacheClearer
    name: str
    stop_event: threading.Event
    queue: str = ""  # this worker's private queue (image affinity)
    warm: bool = False
    observer: JobObserver = field(default_factory=NoObserver)  # the metrics
    batcher: BatchRunner | None = None  # cross-job batching; None when turned off
    runner: JobRunner = field(init=False)
    takeover: Takeover | None = None  # the sweep of dead workers' jobs
    # When this process's heartbeat last failed (monotonic); it sweeps others only
    # after beating for a whole heartbeat TTL since (worker/takeover.py).
    beat_failed_at: float = float("-inf")

    def __post_init__(self) -> None:
        if self.takeover is None:
            self.takeover = Takeover(self.store)
        self.runner = JobRunner(
            self.settings,
            self.model,
            self.store,
            self.observer,
            worker=self.name,
            queue=self.queue,
        )

    def rescue_orphaned_queues(self) -> int:
        """Move jobs from private queues of workers no longer heartbeating back to the
        shared queue, so a dead worker's affinity never strands a job."""
        r, shared = self.store.redis, self.store.keys.queue(self.model.stamp.name)
        registry = self.store.keys.private_queues(self.model.stamp.name)
        # Registered on every beat (so before any job can be routed here, and again
        # if a sweep raced this worker's first beat): a dead worker's queue is known.
        r.sadd(registry, self.queue, self.inflight)
        live = set()
        for key in r.scan_iter(self.store.keys.workers_pattern()):
            live.update(r.hmget(key, "queue", "inflight"))
        moved = 0
        for queue in r.smembers(registry) - live:
            while r.lmove(queue, shared, "RIGHT", "RIGHT") is not None:
                moved += 1
            r.srem(registry, queue)
        if moved:
            log.warning("moved %d job(s) from dead workers' queues to %s", moved, shared)
        return moved

    @property
    def inflight(self) -> str:
        """The list holding the messages of jobs this process took into a batch."""
        return self.store.keys.inflight(self.name)

    def beat(self) -> None:
        self.store.heartbeat(
            self.name,
            Heartbeat(
                model=self.model.stamp.name,
                device=str(self.model.device),
                weights=self.model.stamp.weights,
                warm=self.warm,
                pid=os.getpid(),
                parent_pid=os.getppid(),
                queue=self.queue,
                inflight=self.inflight,
                cuda_cache_clears=self.clearer.clears,
                cuda_cache_bytes_released=self.clearer.bytes_released,
            ),
            self.settings.heartbeat_ttl_s,
        )
        self.observer.heartbeat()


_current: Runtime | None = None


class _QuietSam2(logging.Filter):
    """Drop SAM 2's per-image INFO lines ("Computing image embeddings...")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or f"{os.sep}sam2{os.sep}" not in record.pathname


def start(settings: Settings) -> Runtime:
    global _current
    # SAM 2 logs through the root logger directly, so the filter sits there.
    logging.getLogger().addFilter(_QuietSam2())
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    keys = Keys(settings.key_prefix)
    name = f"{socket.gethostname()}:{os.getpid()}"
    client = redis_clients.sync_client(
        settings.redis_url,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry_on_timeout=True,
    )
    if settings.fault_injection:
        faults.hold_warmup(client, keys)
    model = SegmentationModel(settings)
    warmup_s = model.warmup()
    store = JobStore(
        client,
        keys,
        max_attempts=settings.max_attempts,
        retry_s=settings.redis_retry_s,
        holder=name,
        # The supervisor's beat, written by worker/celery_app.py under the same names.
        supervisor=keys.supervisor(node_name(), os.getppid()),
        replicas=settings.replicas_to_ack(),
        replica_timeout_ms=settings.redis_replica_ack_timeout_ms,
    )
    clearer = CacheClearer(
        settings.cuda_empty_cache, settings.cuda_empty_cache_threshold_bytes, model.device
    )
    takeover = Takeover(store)
    runtime = Runtime(
        settings=settings,
        model=model,
        store=store,
        clearer=clearer,
        name=name,
        stop_event=threading.Event(),
        # The supervisor consumes this queue too (worker/celery_app.py); its pid is
        # the parent's, so both sides derive the same name.
        queue=keys.private_queue(settings.model, node_name(), os.getppid()),
        warm=True,
        takeover=takeover,
        observer=observe(
            settings, model, store, clearer, takeover, worker=node_name(), warmup_s=warmup_s
        ),
    )
    batch_size = settings.batch_size_for(model.device.type)
    if batch_size > 1:
        gatherer = Gatherer(
            store,
            queues=[runtime.queue, keys.queue(model.stamp.name)],
            shared_queue=keys.queue(model.stamp.name),
            inflight=runtime.inflight,
            max_size=batch_size,
            wait_s=settings.batch_wait_ms / 1000,
            start=runtime.runner.start,  # batched jobs are observed too
        )
        runtime.batcher = BatchRunner(runtime.runner, gatherer)
    log.info("warm-up inference took %.2fs; worker %s ready", warmup_s, runtime.name)
    threading.Thread(
        target=_heartbeat_loop, args=(runtime,), daemon=True, name="sam2fleet-heartbeat"
    ).start()
    _current = runtime
    return runtime


def current() -> Runtime:
    if _current is None:  # a solo pool or eager call: load in this process
        from sam2fleet.shared.settings import get_settings

        return start(get_settings())
    return _current


def stop() -> None:
    if _current is None:
        return
    _current.stop_event.set()
    try:
        _current.store.forget_worker(_current.name)
    except redis.RedisError:
        pass  # Redis gone too; the key expires by itself


def _heartbeat_loop(runtime: Runtime) -> None:
    while not runtime.stop_event.is_set():
        try:
            redis_clients.follow_primary(runtime.store.redis)  # Sentinel: the primary now
            runtime.beat()
            runtime.rescue_orphaned_queues()
            healthy_s = time.monotonic() - runtime.beat_failed_at
            if runtime.takeover is not None and healthy_s >= runtime.settings.heartbeat_ttl_s:
                runtime.takeover.sweep()
        except redis.RedisError as exc:
            # Keep beating: the worker reconnects by itself when Redis is back.
            runtime.beat_failed_at = time.monotonic()
            log.warning("heartbeat failed: %s", exc)
        runtime.stop_event.wait(runtime.settings.heartbeat_interval_s)
