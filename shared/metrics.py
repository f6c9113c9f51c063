"""Metric conventions both processes share: bucket layouts and bounded label values.

Names follow the Prometheus guide (prefix `sam2fleet_`, base units, `_seconds`,
`_bytes`, `_total`); labels are bounded sets, never ids or raw paths. The metrics
themselves live with the process that owns them: `api/metrics.py`, `worker/metrics.py`.
No torch here: the API imports this module.
"""

from __future__ import annotations

from sam2fleet.shared.errors import Sam2FleetError

# From 1 ms (a prompt decoded against a cached embedding on a GPU) to 10 min (a
# large automatic job on a CPU): fine steps below 100 ms where interactive jobs live,
# coarse ones above 10 s where automatic ones do.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)
# Request bodies: 256 B (a JSON job naming an uploaded image) to the 40 MiB cap.
SIZE_BUCKETS = tuple(float(256 * 4**i) for i in range(10))  # 256 B .. 64 MiB
# Prompts decoded against one image embedding: 1 object .. a 128x128 point grid.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 16384)
ENCODER_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)

MODES = ("prompt", "auto", "video")
# Where one job's time goes, in the order it is spent (`timings.<stage>_s`).
STAGES = ("queue", "decode", "embed", "predict", "encode")
# What a worker did with a job it took from the queue.
OUTCOMES = ("succeeded", "failed", "cancelled", "skipped", "discarded")


def error_types() -> list[str]:
    """Every `error.type` a job or a request can carry: the error tree."""
    seen: set[str] = set()
    todo: list[type[Sam2FleetError]] = [Sam2FleetError]
    while todo:
        cls = todo.pop()
        seen.add(cls.type)
        todo.extend(cls.__subclasses__())
    return sorted(seen)
