"""Writes the Grafana dashboards in dashboards/ (run: python deploy/grafana/generate.py).

Dashboards as code: edit the panels here, re-run, commit both. A test checks the JSON
is what this script writes, and another evaluates every query against a real
Prometheus scraping a real fleet (tests/observability).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "sam2fleet-prometheus"}
W = '{worker=~"$worker"}'
RI = "$__rate_interval"


def q(q_: float, metric: str, sel: str, by: str) -> str:
    return f"histogram_quantile({q_}, sum by (le, {by}) (rate({metric}_bucket{{{sel}}}[{RI}])))"


def target(expr: str, legend: str, ref: str, **extra: Any) -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, **extra}


class Board:
    def __init__(self, uid: str, title: str, description: str, variables: list[str]) -> None:
        self.uid, self.title, self.description, self.variables = uid, title, description, variables
        self.panels: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.y = 0
        self.x = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "panels": [],
                "id": len(self.panels) + 1,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
            }
        )
        self.y += 1

    def panel(
        self,
        title: str,
        description: str,
        targets: list[tuple[str, str]],
        *,
        kind: str = "timeseries",
        unit: str = "short",
        width: int = 12,
        field: dict[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        if self.x + width > 24:
            self._newline()
        refs = "ABCDEFGH"
        self.panels.append(
            {
                "id": len(self.panels) + 1,
                "type": kind,
                "title": title,
                "description": description,
                "datasource": DS,
                "gridPos": {"h": 8, "w": width, "x": self.x, "y": self.y},
                "fieldConfig": {
                    "defaults": {"unit": unit, **(field or {})},
                    "overrides": extra.pop("overrides", []),
                },
                "options": extra.pop(
                    "options", {"legend": {"displayMode": "table", "placement": "bottom"}}
                ),
                "targets": [
                    target(expr, legend, refs[i], **extra.get("target_extra", {}))
                    for i, (expr, legend) in enumerate(targets)
                ],
                **{k: v for k, v in extra.items() if k != "target_extra"},
            }
        )
        self.x += width

    def _newline(self) -> None:
        if self.x:
            self.y += 8
            self.x = 0

    def json(self) -> dict[str, Any]:
        variables = {
            "model": ("sam2fleet_worker_up", "model"),
            "worker": ('sam2fleet_worker_up{model=~"$model"}', "worker"),
        }
        templating = [
            {
                "name": "datasource",
                "type": "datasource",
                "query": "prometheus",
                "current": {"text": "Prometheus", "value": "sam2fleet-prometheus"},
                "hide": 0,
            }
        ]
        for name in self.variables:
            if name == "mode":
                templating.append(
                    {
                        "name": "mode",
                        "label": "mode",
                        "type": "custom",
                        "query": "prompt,auto",
                        "includeAll": True,
                        "multi": True,
                        "allValue": ".*",
                        "current": {"text": "All", "value": "$__all"},
                    }
                )
                continue
            metric, label = variables[name]
            templating.append(
                {
                    "name": name,
                    "label": name,
                    "type": "query",
                    "datasource": DS,
                    "definition": f"label_values({metric}, {label})",
                    "query": {"query": f"label_values({metric}, {label})", "refId": name},
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"text": "All", "value": "$__all"},
                    "sort": 1,
                }
            )
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["sam2fleet"],
            "timezone": "browser",
            "schemaVersion": 39,
            "version": 1,
            "editable": False,
            "refresh": "30s",
            "time": {"from": "now-1h", "to": "now"},
            "templating": {"list": templating},
            "annotations": {
                "list": [
                    {
                        "builtIn": 1,
                        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                        "enable": True,
                        "hide": True,
                        "iconColor": "rgba(0, 211, 255, 1)",
                        "name": "Annotations & Alerts",
                        "type": "dashboard",
                    },
                    *self.annotations,
                ]
            },
            "panels": self.panels,
        }


def gpu_memory() -> Board:
    b = Board(
        "sam2fleet-gpu-memory",
        "sam2fleet / GPU memory",
        "Per-worker GPU memory as torch and the driver see it; cache clears marked.",
        ["model", "worker"],
    )
    b.annotations.append(
        {
            "name": "CUDA cache clears",
            "datasource": DS,
            "enable": True,
            "iconColor": "orange",
            "titleFormat": "cache cleared on {{worker}}",
            "expr": f"increase(sam2fleet_cuda_cache_clears_total{W}[{RI}]) > 0",
            "step": "15s",
        }
    )
    b.row("Torch allocator")
    b.panel(
        "Allocated / reserved / peak per worker",
        "Bytes held by tensors, by torch's caching allocator, and the peak of the current "
        "or last job. Cache clears show as orange marks.",
        [
            (f"sam2fleet_gpu_memory_allocated_bytes{W}", "{{worker}} allocated"),
            (f"sam2fleet_gpu_memory_reserved_bytes{W}", "{{worker}} reserved"),
            (f"sam2fleet_gpu_memory_peak_bytes{W}", "{{worker}} peak"),
        ],
        unit="bytes",
    )
    b.panel(
        "Cached but unused (reserved - allocated)",
        "Memory the allocator keeps for reuse; the cache policy clears it past its threshold.",
        [
            (
                f"sam2fleet_gpu_memory_reserved_bytes{W} - sam2fleet_gpu_memory_allocated_bytes{W}",
                "{{worker}}",
            )
        ],
        unit="bytes",
    )
    b.row("Driver (NVML, whole device)")
    b.panel(
        "Driver used vs total",
        "The whole device as the driver sees it, all processes included.",
        [
            (f"sam2fleet_gpu_memory_driver_used_bytes{W}", "{{worker}} used"),
            (f"sam2fleet_gpu_memory_driver_total_bytes{W}", "{{worker}} total"),
        ],
        unit="bytes",
    )
    b.panel(
        "Free headroom",
        "Total minus used on each worker's device: what the next big image can still get.",
        [
            (
                f"sam2fleet_gpu_memory_driver_total_bytes{W} - "
                f"sam2fleet_gpu_memory_driver_used_bytes{W}",
                "{{worker}} ({{device}})",
            )
        ],
        unit="bytes",
        kind="stat",
        options={
            "reduceOptions": {"calcs": ["lastNotNull"]},
            "colorMode": "value",
            "graphMode": "area",
        },
    )
    b.row("Cache policy and model")
    b.panel(
        "CUDA cache clears",
        "empty_cache() calls by the SAM2FLEET_CUDA_EMPTY_CACHE policy per interval.",
        [(f"increase(sam2fleet_cuda_cache_clears_total{W}[{RI}])", "{{worker}}")],
        width=8,
    )
    b.panel(
        "Bytes released by cache clears",
        "Bytes handed back to the driver by those clears.",
        [(f"increase(sam2fleet_cuda_cache_released_bytes_total{W}[{RI}])", "{{worker}}")],
        unit="bytes",
        width=8,
    )
    b.panel(
        "Model load time",
        "Seconds each worker took to build SAM 2 and load its weights, and its warm-up.",
        [
            ('sam2fleet_model_load_seconds{model=~"$model", worker=~"$worker"}', "{{worker}} load"),
            (
                'sam2fleet_model_warmup_seconds{model=~"$model", worker=~"$worker"}',
                "{{worker}} warm-up",
            ),
        ],
        unit="s",
        width=8,
        kind="bargauge",
    )
    return b


def latency() -> Board:
    b = Board(
        "sam2fleet-latency",
        "sam2fleet / Latency",
        "p50/p95/p99 end to end and per stage, by model and mode; queue wait vs depth.",
        ["model", "mode", "worker"],
    )
    sel = 'model=~"$model", mode=~"$mode", worker=~"$worker"'
    b.row("End to end (submit to result)")
    b.panel(
        "End-to-end p50 / p95 / p99 by model and mode",
        "From the job record's created_at to the terminal state written by the worker.",
        [
            (
                q(p, "sam2fleet_job_duration_seconds", sel, "model, mode"),
                f"p{int(p * 100)} {{{{model}}}} {{{{mode}}}}",
            )
            for p in (0.5, 0.95, 0.99)
        ],
        unit="s",
    )
    b.panel(
        "End-to-end latency heatmap",
        "Jobs per latency bucket per interval; a second band means a second population "
        "(automatic jobs, a slow worker).",
        [
            (
                f"sum by (le) (increase(sam2fleet_job_duration_seconds_bucket{{{sel}}}[{RI}]))",
                "{{le}}",
            )
        ],
        kind="heatmap",
        unit="s",
        options={
            "calculate": False,
            "yAxis": {"unit": "s"},
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges"},
        },
        target_extra={"format": "heatmap"},
    )
    b.row("Stages")
    for p in (0.5, 0.95, 0.99):
        b.panel(
            f"p{int(p * 100)} per stage",
            "queue, decode, embed, predict (prompt decoding or automatic generation), encode.",
            [
                (
                    q(p, "sam2fleet_job_stage_duration_seconds", sel, "stage, mode"),
                    "{{stage}} {{mode}}",
                )
            ],
            unit="s",
            width=8,
        )
    b.row("Queue and gateway")
    b.panel(
        "Queue wait p95 vs queue depth",
        "Wait rising with depth: too few workers. Wait rising at zero depth: workers slow "
        "to take jobs (warming up, restarting).",
        [
            (
                q(
                    0.95,
                    "sam2fleet_job_stage_duration_seconds",
                    'stage="queue", model=~"$model", mode=~"$mode", worker=~"$worker"',
                    "model",
                ),
                "queue wait p95 {{model}}",
            ),
            ('sum by (model) (sam2fleet_queue_depth{model=~"$model"})', "depth {{model}}"),
        ],
        unit="s",
        overrides=[
            {
                "matcher": {"id": "byRegexp", "options": "depth.*"},
                "properties": [
                    {"id": "custom.axisPlacement", "value": "right"},
                    {"id": "unit", "value": "short"},
                ],
            }
        ],
    )
    b.panel(
        "Gateway request latency p95 by route",
        "API time per route template; GET /v1/jobs/{job_id} includes long-poll waits.",
        [(q(0.95, "sam2fleet_http_request_duration_seconds", "", "route"), "{{route}}")],
        unit="s",
    )
    return b


def throughput() -> Board:
    b = Board(
        "sam2fleet-throughput",
        "sam2fleet / Throughput and errors",
        "Jobs per second by outcome, error types, 429/503 answers, workers.",
        ["model", "worker"],
    )
    sel = 'model=~"$model", worker=~"$worker"'
    b.row("Jobs")
    b.panel(
        "Jobs/s by outcome",
        "What workers did with the jobs they took: succeeded, failed, cancelled while "
        "running, skipped (already cancelled or finished), discarded.",
        [(f"sum by (outcome) (rate(sam2fleet_jobs_finished_total{{{sel}}}[{RI}]))", "{{outcome}}")],
        unit="reqps",
        width=8,
    )
    b.panel(
        "Submitted jobs/s by model and mode",
        "Accepted by the API (202).",
        [
            (
                f'sum by (model, mode) (rate(sam2fleet_jobs_submitted_total{{model=~"$model"}}'
                f"[{RI}]))",
                "{{model}} {{mode}}",
            )
        ],
        unit="reqps",
        width=8,
    )
    b.panel(
        "Masks returned/s",
        "Masks in succeeded results, by mode.",
        [(f"sum by (mode) (rate(sam2fleet_masks_returned_total{{{sel}}}[{RI}]))", "{{mode}}")],
        unit="short",
        width=8,
    )
    b.row("Errors")
    b.panel(
        "Job errors/s by type",
        "error.type of failed jobs.",
        [
            (
                f"sum by (error_type) (rate(sam2fleet_job_errors_total{{{sel}}}[{RI}]))",
                "{{error_type}}",
            )
        ],
        unit="reqps",
        width=8,
    )
    b.panel(
        "HTTP errors/s by type",
        "error.type of 4xx/5xx answers of the API.",
        [
            (
                f"sum by (error_type, status) (rate(sam2fleet_http_errors_total[{RI}]))",
                "{{status}} {{error_type}}",
            )
        ],
        unit="reqps",
        width=8,
    )
    b.panel(
        "429 / 503 answers/s",
        "Rate-limited (429) and unavailable (503: Redis down, no worker ready, queue full).",
        [
            (
                f'sum by (status) (rate(sam2fleet_http_requests_total{{status=~"429|503"}}[{RI}]))',
                "{{status}}",
            )
        ],
        unit="reqps",
        width=8,
    )
    b.row("Fleet")
    b.panel(
        "Workers",
        "Warm workers by their own metrics, by the API's view of heartbeats, and "
        "scrape targets up.",
        [
            ('sum(sam2fleet_worker_up{model=~"$model"})', "up (worker metrics)"),
            ('sum(sam2fleet_workers_ready{model=~"$model"})', "ready (heartbeats in Redis)"),
            ('sum(up{job="sam2fleet-worker"})', "scrape targets up"),
        ],
        width=8,
    )
    b.panel(
        "Queue depth by model",
        "Jobs waiting for a worker.",
        [('sam2fleet_queue_depth{model=~"$model"}', "{{model}}")],
        width=8,
    )
    b.panel(
        "Heartbeat age",
        "Seconds since each worker last wrote its heartbeat.",
        [(f"time() - sam2fleet_worker_last_heartbeat_timestamp_seconds{W}", "{{worker}}")],
        unit="s",
        width=8,
    )
    b.row("Requests and batches")
    b.panel(
        "Requests/s by route and status",
        "All API answers by route template.",
        [
            (
                f"sum by (route, status) (rate(sam2fleet_http_requests_total[{RI}]))",
                "{{route}} {{status}}",
            )
        ],
        unit="reqps",
        width=8,
    )
    b.panel(
        "Request payload p95 by route",
        "Request body bytes.",
        [(q(0.95, "sam2fleet_http_request_size_bytes", "", "route"), "{{route}}")],
        unit="bytes",
        width=8,
    )
    b.panel(
        "Batch size p50 / p95",
        "Prompts decoded against one image embedding (objects, or grid points in auto).",
        [
            (q(p, "sam2fleet_batch_size", sel, "mode"), f"p{int(p * 100)} {{{{mode}}}}")
            for p in (0.5, 0.95)
        ],
        width=8,
    )
    b.panel(
        "Embedding cache hits and misses/s",
        "Prompt jobs answered from a worker's cached image embedding (no encoder run) "
        "and those that ran the encoder. Few hits with interactive clients: affinity is "
        "not reaching the worker, or the cache is too small.",
        [
            (f"sum(rate(sam2fleet_embedding_cache_hits_total{{{sel}}}[{RI}]))", "hits"),
            (f"sum(rate(sam2fleet_embedding_cache_misses_total{{{sel}}}[{RI}]))", "misses"),
        ],
        unit="reqps",
        width=8,
    )
    b.panel(
        "Encoder batch size p50 / p95 (cross-job batching)",
        "Images sharing one image-encoder forward pass, per prompt job that ran the "
        "encoder; 1 = encoded alone (nothing else was waiting).",
        [
            (q(p, "sam2fleet_encoder_batch_size", sel, "model"), f"p{int(p * 100)} {{{{model}}}}")
            for p in (0.5, 0.95)
        ],
        width=8,
    )
    video(b, sel)
    return b


def video(b: Board, sel: str) -> None:
    """Video jobs (docs/video.md): frames tracked, time per frame, memory held."""
    b.row("Video")
    b.panel(
        "Video frames/s per worker",
        "Frames SAM 2's video predictor tracked (all objects of a frame count once).",
        [
            (
                f"sum by (worker) (rate(sam2fleet_video_frames_tracked_total{{{sel}}}[{RI}]))",
                "{{worker}}",
            )
        ],
        unit="short",
        width=8,
    )
    b.panel(
        "Time per video frame p50 / p95 / p99",
        "Decoding, tracking, encoding and writing one frame's record (prompt jobs "
        "answered between frames excluded).",
        [
            (q(p, "sam2fleet_video_frame_seconds", sel, "model"), f"p{int(p * 100)} {{{{model}}}}")
            for p in (0.5, 0.95, 0.99)
        ],
        unit="s",
        width=8,
    )
    b.panel(
        "Memory during video jobs",
        "Tensors SAM 2's tracking state holds (flat in the video's length: outputs SAM 2 "
        "no longer reads are dropped), the device's allocated bytes, and the worker "
        "process's resident memory (decoded frames and the host side of a CPU worker).",
        [
            (f"sam2fleet_video_state_bytes{{{sel}}}", "state {{worker}}"),
            (f"sam2fleet_gpu_memory_allocated_bytes{W}", "device allocated {{worker}}"),
            ('process_resident_memory_bytes{job="sam2fleet-worker"}', "resident {{instance}}"),
        ],
        unit="bytes",
        width=8,
    )


BOARDS = {"gpu-memory.json": gpu_memory, "latency.json": latency, "throughput.json": throughput}


def render() -> dict[str, str]:
    return {name: json.dumps(make().json(), indent=2) + "\n" for name, make in BOARDS.items()}


if __name__ == "__main__":
    for name, text in render().items():
        (HERE / "dashboards" / name).write_text(text)
        print(f"wrote {HERE / 'dashboards' / name}")
