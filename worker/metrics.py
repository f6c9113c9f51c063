"""The worker's Prometheus metrics, served by the pool process on its own port.

Why the pool process serves them (not prometheus-client's multiprocess mode): with
`--concurrency 1` one child holds the model, runs every job and knows the GPU, so
its registry *is* the worker's state; the supervisor has nothing to add. Each worker
gets its own port (`worker_metrics_port`; `sam2fleet up` gives worker i port + i)
and a `worker` label (its Celery node name), so several workers on one host are
separate series that `sum` adds up. A replaced child starts from zero, which
`rate()`/`increase()` treat as a counter reset.

Jobs are observed explicitly: the job runner (worker/jobs.py) calls `JobMetrics` when
a job starts, right after each terminal write (told whether Redis accepted it) and
when the task ends, so each job is counted once, and the end-to-end latency (record
`created_at` to the terminal write) is exact.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sam2fleet.shared.errors import WorkerCrashed
from sam2fleet.shared.metrics import (
    BATCH_BUCKETS,
    ENCODER_BATCH_BUCKETS,
    LATENCY_BUCKETS,
    MODES,
    OUTCOMES,
    STAGES,
    error_types,
)
from sam2fleet.shared.records import JobRecord
from sam2fleet.shared.schemas import ErrorBody
from sam2fleet.shared.settings import Settings
from sam2fleet.worker import video_metrics
from sam2fleet.worker.gpu import CacheClearer, DeviceMemory
from sam2fleet.worker.model import SegmentationModel
from sam2fleet.worker.store import JobStore
from sam2fleet.worker.takeover import Takeover

log = logging.getLogger(__name__)

JOBS_FINISHED = Counter(
    "sam2fleet_jobs_finished_total",
    "Jobs a worker took from the queue, by outcome.",
    ["model", "mode", "outcome", "worker"],
)
JOB_ERRORS = Counter(
    "sam2fleet_job_errors_total",
    "Failed jobs by `error.type`.",
    ["model", "mode", "error_type", "worker"],
)
STAGE_SECONDS = Histogram(
    "sam2fleet_job_stage_duration_seconds",
    "Seconds a job spent in each stage: queue, decode, embed, predict, encode.",
    ["model", "mode", "stage", "worker"],
    buckets=LATENCY_BUCKETS,
)
JOB_SECONDS = Histogram(
    "sam2fleet_job_duration_seconds",
    "End to end: submission to the terminal state written.",
    ["model", "mode", "outcome", "worker"],
    buckets=LATENCY_BUCKETS,
)
MASKS = Counter(
    "sam2fleet_masks_returned_total", "Masks in succeeded results.", ["model", "mode", "worker"]
)
BATCH_SIZE = Histogram(
    "sam2fleet_batch_size",
    "Prompts decoded against one image embedding: objects (prompt mode) or grid points "
    "(auto mode, points_per_side squared).",
    ["model", "mode", "worker"],
    buckets=BATCH_BUCKETS,
)
ENCODER_BATCH = Histogram(
    "sam2fleet_encoder_batch_size",
    "Prompt jobs whose image was encoded, by how many images shared that image-encoder "
    "forward pass (cross-job batching; 1 = encoded alone). Observed once per job.",
    ["model", "worker"],
    buckets=ENCODER_BATCH_BUCKETS,
)
CACHE_HITS = Counter(
    "sam2fleet_embedding_cache_hits_total",
    "Prompt jobs answered from a cached image embedding (no encoder run).",
    ["model", "worker"],
)
CACHE_MISSES = Counter(
    "sam2fleet_embedding_cache_misses_total",
    "Prompt jobs whose image embedding was not cached (encoder run).",
    ["model", "worker"],
)
WORKER_UP = Gauge(
    "sam2fleet_worker_up",
    "1 once the model is loaded and warmed up.",
    ["model", "device", "worker"],
)
HEARTBEAT = Gauge(
    "sam2fleet_worker_last_heartbeat_timestamp_seconds",
    "Unix time of the last heartbeat written to Redis.",
    ["worker"],
)
MODEL_LOAD = Gauge(
    "sam2fleet_model_load_seconds",
    "Seconds to build the model and load weights.",
    ["model", "worker"],
)
WARMUP = Gauge(
    "sam2fleet_model_warmup_seconds", "Seconds of the warm-up inference.", ["model", "worker"]
)

_installed: Collector | None = None


class WorkerCollector(Collector):
    """Read at scrape time: device memory and the cache clearer's counts."""

    def __init__(
        self,
        worker: str,
        memory: DeviceMemory,
        clearer: CacheClearer,
        store: JobStore,
        takeover: Takeover,
    ) -> None:
        self.worker, self.memory, self.clearer = worker, memory, clearer
        self.store, self.takeover = store, takeover

    def collect(self) -> Iterator[Metric]:
        labels = ["worker", "device"]
        values = [self.worker, str(self.memory.device)]
        helps = {
            "allocated": "Bytes held by tensors (torch.cuda.memory_allocated).",
            "reserved": "Bytes held by torch's caching allocator (memory_reserved).",
            "peak": "Most bytes allocated during the current or last job "
            "(max_memory_allocated, reset when a job starts).",
            "driver_used": "Bytes in use on the whole device, all processes (NVML).",
            "driver_total": "Bytes on the device (NVML).",
        }
        for key, value in self.memory.read().items():
            gauge = GaugeMetricFamily(
                f"sam2fleet_gpu_memory_{key}_bytes", helps[key], labels=labels
            )
            gauge.add_metric(values, value)
            yield gauge
        clears = CounterMetricFamily(
            "sam2fleet_cuda_cache_clears",
            "torch.cuda.empty_cache() calls by the cache policy.",
            labels=labels,
        )
        clears.add_metric(values, self.clearer.clears)
        yield clears
        released = CounterMetricFamily(
            "sam2fleet_cuda_cache_released_bytes",
            "Bytes the cache clears returned to the driver.",
            labels=labels,
        )
        released.add_metric(values, self.clearer.bytes_released)
        yield released
        fenced = CounterMetricFamily(
            "sam2fleet_fenced_writes",
            "Terminal writes of this worker refused because the job had been taken over "
            "while the worker was out of reach (its outcome discarded, not a second result).",
            labels=["worker"],
        )
        fenced.add_metric([self.worker], self.store.fenced_writes)
        yield fenced
        taken = CounterMetricFamily(
            "sam2fleet_jobs_taken_over",
            "Jobs this worker's sweep took from workers whose heartbeats stopped, by how: "
            "`released` (back to queued, the dead holder fenced off) and `requeued` (the "
            "whole worker was gone: its unacknowledged message put back in the queue).",
            labels=["worker", "how"],
        )
        taken.add_metric([self.worker, "requeued"], self.takeover.requeued)
        taken.add_metric([self.worker, "released"], self.takeover.released)
        yield taken


class JobMetrics:
    """Counts each job at the points the job runner reports: started (or not), its
    terminal write, and the end of its task. Implements `jobs.JobObserver`."""

    def __init__(self, worker: str, memory: DeviceMemory, store: JobStore) -> None:
        self.worker, self.memory, self.store = worker, memory, store
        # Jobs started and not yet finished: more than one with cross-job batching.
        self._current: dict[str, JobRecord] = {}

    def started(self, record: JobRecord) -> None:
        self._current[record.id] = record
        self.memory.reset_peak()
        model, mode = record.model, record.mode
        queued = time.time() - record.created_at
        STAGE_SECONDS.labels(model, mode, "queue", self.worker).observe(max(0.0, queued))
        BATCH_SIZE.labels(model, mode, self.worker).observe(_batch_size(record))

    def not_started(self, job_id: str) -> None:
        # Cancelled, already finished (a redelivery), expired, or failed just now by
        # the start script because its earlier deliveries all died with their worker.
        record = self.store.record(job_id)
        if record is None:
            JOBS_FINISHED.labels("unknown", "unknown", "skipped", self.worker).inc()
            return
        if record.error is not None and record.error.type == WorkerCrashed.type:
            JOB_ERRORS.labels(record.model, record.mode, WorkerCrashed.type, self.worker).inc()
            self._finished(record, "failed")
            return
        JOBS_FINISHED.labels(record.model, record.mode, "skipped", self.worker).inc()

    def succeeded(self, job_id: str, result: dict[str, Any], written: bool) -> None:
        record = self._current.pop(job_id, None)
        if record is None:
            return
        model, mode = record.model, record.mode
        timings = result.get("timings", {})
        for stage in STAGES[1:]:  # the queue wait was observed at start
            seconds = timings.get(f"{stage}_s")
            if seconds is not None:
                STAGE_SECONDS.labels(model, mode, stage, self.worker).observe(seconds)
        if written:
            MASKS.labels(model, mode, self.worker).inc(len(result.get("masks", [])))
            batched = timings.get("encoder_batch_size")
            if batched:
                ENCODER_BATCH.labels(model, self.worker).observe(batched)
            hit = timings.get("embedding_cache_hit")
            if hit is not None:
                (CACHE_HITS if hit else CACHE_MISSES).labels(model, self.worker).inc()
        self._finished(record, "succeeded" if written else "discarded")

    def failed(self, job_id: str, error: ErrorBody, written: bool) -> None:
        record = self._current.pop(job_id, None)
        if record is None:
            return
        if written:
            JOB_ERRORS.labels(record.model, record.mode, error.type, self.worker).inc()
        self._finished(record, "failed" if written else "discarded")

    def ended(self, job_id: str, outcome: str) -> None:
        # A job still current was stopped without a terminal write: counted only when
        # it was cancelled; one given back to the queue is counted where it runs.
        record = self._current.pop(job_id, None)
        if record is not None and outcome == "cancelled":
            self._finished(record, "cancelled")

    def heartbeat(self) -> None:
        HEARTBEAT.labels(self.worker).set(time.time())

    def _finished(self, record: JobRecord, outcome: str) -> None:
        model, mode = record.model, record.mode
        JOBS_FINISHED.labels(model, mode, outcome, self.worker).inc()
        if outcome in ("succeeded", "failed"):
            JOB_SECONDS.labels(model, mode, outcome, self.worker).observe(
                max(0.0, time.time() - record.created_at)
            )


def _batch_size(record: JobRecord) -> int:
    if record.mode == "video":
        return 1  # one video per job; its objects are tracked one after another
    spec = record.spec
    if spec.mode == "auto":
        return spec.auto.points_per_side**2
    return max(1, len(spec.prompts))


def observe(
    settings: Settings,
    model: SegmentationModel,
    store: JobStore,
    clearer: CacheClearer,
    takeover: Takeover,
    *,
    worker: str,
    warmup_s: float,
) -> JobMetrics:
    """Register the worker's metrics, serve /metrics on the configured port, and
    return the observer the job runner reports to."""
    global _installed
    name = model.stamp.name
    memory = DeviceMemory(model.device)
    if _installed is not None:  # a second start in one process (tests, solo pool)
        REGISTRY.unregister(_installed)
    _installed = WorkerCollector(worker, memory, clearer, store, takeover)
    REGISTRY.register(_installed)
    # Known label values start at 0, so rates and error panels have series before
    # the first event (Prometheus' advice for counters with labels).
    for mode in MODES:
        for outcome in OUTCOMES:
            JOBS_FINISHED.labels(name, mode, outcome, worker)
        for error_type in error_types():
            JOB_ERRORS.labels(name, mode, error_type, worker)
        MASKS.labels(name, mode, worker)
    CACHE_HITS.labels(name, worker)
    CACHE_MISSES.labels(name, worker)
    video_metrics.prepare(name)
    MODEL_LOAD.labels(name, worker).set(model.load_seconds)
    WARMUP.labels(name, worker).set(warmup_s)
    WORKER_UP.labels(name, str(memory.device), worker).set(1)
    _serve(settings.worker_metrics_host, settings.worker_metrics_port)
    return JobMetrics(worker, memory, store)


def _serve(host: str, port: int) -> None:
    if not port:
        return
    try:
        start_http_server(port, addr=host)
    except OSError as exc:  # the worker still serves jobs; only its metrics are lost
        log.error(
            "worker metrics: cannot listen on %s:%d (%s); set "
            "SAM2FLEET_WORKER_METRICS_PORT to a free port per worker",
            host,
            port,
            exc,
        )
    else:
        log.info("worker metrics on http://%s:%d/metrics", host, port)
