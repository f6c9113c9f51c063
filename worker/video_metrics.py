"""The worker's video metrics (worker/metrics.py has the job-level ones, which count
video jobs too, with mode="video").

    sam2fleet_video_frames_tracked_total   frames SAM 2 tracked (rate: frames/s)
    sam2fleet_video_frame_seconds          one frame: decoding, tracking, writing
    sam2fleet_video_state_bytes            tensors the running video's tracking state
                                           holds (0 between video jobs): flat in the
                                           video's length, by design
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from sam2fleet.shared.metrics import LATENCY_BUCKETS
from sam2fleet.worker.observability import node_name

FRAMES_TRACKED = Counter(
    "sam2fleet_video_frames_tracked_total",
    "Video frames a worker tracked (every object on the frame).",
    ["model", "worker"],
)
FRAME_SECONDS = Histogram(
    "sam2fleet_video_frame_seconds",
    "Seconds per tracked video frame: decoding, SAM 2, encoding and writing the "
    "frame's record (not prompt jobs answered between frames).",
    ["model", "worker"],
    buckets=LATENCY_BUCKETS,
)
STATE_BYTES = Gauge(
    "sam2fleet_video_state_bytes",
    "Bytes of tensors held by the tracking state of the video job a worker runs "
    "(SAM 2's kept outputs); 0 when it runs none.",
    ["model", "worker"],
)


def prepare(model: str) -> None:
    """Series exist from the worker's start, so panels have data before any video."""
    worker = node_name()
    FRAMES_TRACKED.labels(model, worker)
    FRAME_SECONDS.labels(model, worker)
    STATE_BYTES.labels(model, worker).set(0)


def frame_tracked(rt: Any, seconds: float, state_bytes: int) -> None:
    model, worker = rt.model.stamp.name, node_name()
    FRAMES_TRACKED.labels(model, worker).inc()
    FRAME_SECONDS.labels(model, worker).observe(seconds)
    STATE_BYTES.labels(model, worker).set(state_bytes)


def video_ended(rt: Any) -> None:
    STATE_BYTES.labels(rt.model.stamp.name, node_name()).set(0)
