"""Writes the Grafana dashboards in dashboards/ (run: python deploy/grafana/generate.py).

Dashboards as code: edit the panels here (board.py lays them out), re-run, commit
both. A test checks the JSON is what this script writes, and another evaluates every
query against a real Prometheus scraping a real fleet (tests/observability).
"""

from __future__ import annotations

import json
from pathlib import Path

# board.py sits beside this script, whose folder Python puts first on sys.path.
from board import (
    BY_WORKER,
    DATASOURCE,
    PERCENTILES,
    RATE_WINDOW,
    Board,
    percentile,
    quantile,
    summed_rate,
)

HERE = Path(__file__).resolve().parent


def gpu_memory() -> Board:
    board = Board(
        "sam2fleet-gpu-memory",
        "sam2fleet / GPU memory",
        "Per-worker GPU memory as torch and the driver see it; cache clears marked.",
        ["model", "worker"],
    )
    board.annotations.append(
        {
            "name": "CUDA cache clears",
            "datasource": DATASOURCE,
            "enable": True,
            "iconColor": "orange",
            "titleFormat": "cache cleared on {{worker}}",
            "expr": f"increase(sam2fleet_cuda_cache_clears_total{BY_WORKER}[{RATE_WINDOW}]) > 0",
            "step": "15s",
        }
    )
    board.row("Torch allocator")
    board.panel(
        "Allocated / reserved / peak per worker",
        "Bytes held by tensors, by torch's caching allocator, and the peak of the current "
        "or last job. Cache clears show as orange marks.",
        [
            (f"sam2fleet_gpu_memory_allocated_bytes{BY_WORKER}", "{{worker}} allocated"),
            (f"sam2fleet_gpu_memory_reserved_bytes{BY_WORKER}", "{{worker}} reserved"),
            (f"sam2fleet_gpu_memory_peak_bytes{BY_WORKER}", "{{worker}} peak"),
        ],
        unit="bytes",
    )
    board.panel(
        "Cached but unused (reserved - allocated)",
        "Memory the allocator keeps for reuse; the cache policy clears it past its threshold.",
        [
            (
                f"sam2fleet_gpu_memory_reserved_bytes{BY_WORKER} - "
                f"sam2fleet_gpu_memory_allocated_bytes{BY_WORKER}",
                "{{worker}}",
            )
        ],
        unit="bytes",
    )
    board.row("Driver (NVML, whole device)")
    board.panel(
        "Driver used vs total",
        "The whole device as the driver sees it, all processes included.",
        [
            (f"sam2fleet_gpu_memory_driver_used_bytes{BY_WORKER}", "{{worker}} used"),
            (f"sam2fleet_gpu_memory_driver_total_bytes{BY_WORKER}", "{{worker}} total"),
        ],
        unit="bytes",
    )
    board.panel(
        "Free headroom",
        "Total minus used on each worker's device: what the next big image can still get.",
        [
            (
                f"sam2fleet_gpu_memory_driver_total_bytes{BY_WORKER} - "
                f"sam2fleet_gpu_memory_driver_used_bytes{BY_WORKER}",
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
    board.row("Cache policy and model")
    board.panel(
        "CUDA cache clears",
        "empty_cache() calls by the SAM2FLEET_CUDA_EMPTY_CACHE policy per interval.",
        [(f"increase(sam2fleet_cuda_cache_clears_total{BY_WORKER}[{RATE_WINDOW}])", "{{worker}}")],
        width=8,
    )
    board.panel(
        "Bytes released by cache clears",
        "Bytes handed back to the driver by those clears.",
        [
            (
                f"increase(sam2fleet_cuda_cache_released_bytes_total{BY_WORKER}[{RATE_WINDOW}])",
                "{{worker}}",
            )
        ],
        unit="bytes",
        width=8,
    )
    board.panel(
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
    return board


def latency() -> Board:
    board = Board(
        "sam2fleet-latency",
        "sam2fleet / Latency",
        "p50/p95/p99 end to end and per stage, by model and mode; queue wait vs depth.",
        ["model", "mode", "worker"],
    )
    selector = 'model=~"$model", mode=~"$mode", worker=~"$worker"'
    board.row("End to end (submit to result)")
    board.panel(
        "End-to-end p50 / p95 / p99 by model and mode",
        "From the job record's created_at to the terminal state written by the worker.",
        [
            (
                quantile(level, "sam2fleet_job_duration_seconds", selector, "model, mode"),
                percentile(level) + " {{model}} {{mode}}",
            )
            for level in PERCENTILES
        ],
        unit="s",
    )
    board.panel(
        "End-to-end latency heatmap",
        "Jobs per latency bucket per interval; a second band means a second population "
        "(automatic jobs, a slow worker).",
        [
            (
                "sum by (le) "
                f"(increase(sam2fleet_job_duration_seconds_bucket{{{selector}}}[{RATE_WINDOW}]))",
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
        target_fields={"format": "heatmap"},
    )
    board.row("Stages")
    for level in PERCENTILES:
        board.panel(
            f"{percentile(level)} per stage",
            "queue, decode, embed, predict (prompt decoding or automatic generation), encode.",
            [
                (
                    quantile(
                        level, "sam2fleet_job_stage_duration_seconds", selector, "stage, mode"
                    ),
                    "{{stage}} {{mode}}",
                )
            ],
            unit="s",
            width=8,
        )
    board.row("Queue and gateway")
    board.panel(
        "Queue wait p95 vs queue depth",
        "Wait rising with depth: too few workers. Wait rising at zero depth: workers slow "
        "to take jobs (warming up, restarting).",
        [
            (
                quantile(
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
    board.panel(
        "Gateway request latency p95 by route",
        "API time per route template; GET /v1/jobs/{job_id} includes long-poll waits.",
        [(quantile(0.95, "sam2fleet_http_request_duration_seconds", "", "route"), "{{route}}")],
        unit="s",
    )
    return board


def throughput() -> Board:
    board = Board(
        "sam2fleet-throughput",
        "sam2fleet / Throughput and errors",
        "Jobs per second by outcome, error types, 429/503 answers, workers.",
        ["model", "worker"],
    )
    selector = 'model=~"$model", worker=~"$worker"'
    board.row("Jobs")
    board.panel(
        "Jobs/s by outcome",
        "What workers did with the jobs they took: succeeded, failed, cancelled while "
        "running, skipped (already cancelled or finished), discarded.",
        [
            (
                summed_rate("sam2fleet_jobs_finished_total", selector, "outcome"),
                "{{outcome}}",
            )
        ],
        unit="reqps",
        width=8,
    )
    board.panel(
        "Submitted jobs/s by model and mode",
        "Accepted by the API (202).",
        [
            (
                summed_rate("sam2fleet_jobs_submitted_total", 'model=~"$model"', "model, mode"),
                "{{model}} {{mode}}",
            )
        ],
        unit="reqps",
        width=8,
    )
    board.panel(
        "Masks returned/s",
        "Masks in succeeded results, by mode.",
        [
            (
                summed_rate("sam2fleet_masks_returned_total", selector, "mode"),
                "{{mode}}",
            )
        ],
        unit="short",
        width=8,
    )
    board.row("Errors")
    board.panel(
        "Job errors/s by type",
        "error.type of failed jobs.",
        [
            (
                summed_rate("sam2fleet_job_errors_total", selector, "error_type"),
                "{{error_type}}",
            )
        ],
        unit="reqps",
        width=8,
    )
    board.panel(
        "HTTP errors/s by type",
        "error.type of 4xx/5xx answers of the API.",
        [
            (
                summed_rate("sam2fleet_http_errors_total", by="error_type, status"),
                "{{status}} {{error_type}}",
            )
        ],
        unit="reqps",
        width=8,
    )
    board.panel(
        "429 / 503 answers/s",
        "Rate-limited (429) and unavailable (503: Redis down, no worker ready, queue full).",
        [
            (
                summed_rate("sam2fleet_http_requests_total", 'status=~"429|503"', "status"),
                "{{status}}",
            )
        ],
        unit="reqps",
        width=8,
    )
    board.row("Fleet")
    board.panel(
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
    board.panel(
        "Queue depth by model",
        "Jobs waiting for a worker.",
        [('sam2fleet_queue_depth{model=~"$model"}', "{{model}}")],
        width=8,
    )
    board.panel(
        "Heartbeat age",
        "Seconds since each worker last wrote its heartbeat.",
        [(f"time() - sam2fleet_worker_last_heartbeat_timestamp_seconds{BY_WORKER}", "{{worker}}")],
        unit="s",
        width=8,
    )
    board.row("Requests and batches")
    board.panel(
        "Requests/s by route and status",
        "All API answers by route template.",
        [
            (
                summed_rate("sam2fleet_http_requests_total", by="route, status"),
                "{{route}} {{status}}",
            )
        ],
        unit="reqps",
        width=8,
    )
    board.panel(
        "Request payload p95 by route",
        "Request body bytes.",
        [(quantile(0.95, "sam2fleet_http_request_size_bytes", "", "route"), "{{route}}")],
        unit="bytes",
        width=8,
    )
    board.panel(
        "Batch size p50 / p95",
        "Prompts decoded against one image embedding (objects, or grid points in auto).",
        [
            (
                quantile(level, "sam2fleet_batch_size", selector, "mode"),
                percentile(level) + " {{mode}}",
            )
            for level in PERCENTILES[:2]
        ],
        width=8,
    )
    board.panel(
        "Embedding cache hits and misses/s",
        "Prompt jobs answered from a worker's cached image embedding (no encoder run) "
        "and those that ran the encoder. Few hits with interactive clients: affinity is "
        "not reaching the worker, or the cache is too small.",
        [
            (summed_rate("sam2fleet_embedding_cache_hits_total", selector), "hits"),
            (summed_rate("sam2fleet_embedding_cache_misses_total", selector), "misses"),
        ],
        unit="reqps",
        width=8,
    )
    board.panel(
        "Encoder batch size p50 / p95 (cross-job batching)",
        "Images sharing one image-encoder forward pass, per prompt job that ran the "
        "encoder; 1 = encoded alone (nothing else was waiting).",
        [
            (
                quantile(level, "sam2fleet_encoder_batch_size", selector, "model"),
                percentile(level) + " {{model}}",
            )
            for level in PERCENTILES[:2]
        ],
        width=8,
    )
    video(board, selector)
    return board


def video(board: Board, selector: str) -> None:
    """Video jobs (docs/video.md): frames tracked, time per frame, memory held."""
    board.row("Video")
    board.panel(
        "Video frames/s per worker",
        "Frames SAM 2's video predictor tracked (all objects of a frame count once).",
        [(summed_rate("sam2fleet_video_frames_tracked_total", selector, "worker"), "{{worker}}")],
        unit="short",
        width=8,
    )
    board.panel(
        "Time per video frame p50 / p95 / p99",
        "Decoding, tracking, encoding and writing one frame's record (prompt jobs "
        "answered between frames excluded).",
        [
            (
                quantile(level, "sam2fleet_video_frame_seconds", selector, "model"),
                percentile(level) + " {{model}}",
            )
            for level in PERCENTILES
        ],
        unit="s",
        width=8,
    )
    board.panel(
        "Memory during video jobs",
        "Tensors SAM 2's tracking state holds (flat in the video's length: outputs SAM 2 "
        "no longer reads are dropped), the device's allocated bytes, and the worker "
        "process's resident memory (decoded frames and the host side of a CPU worker).",
        [
            (f"sam2fleet_video_state_bytes{{{selector}}}", "state {{worker}}"),
            (f"sam2fleet_gpu_memory_allocated_bytes{BY_WORKER}", "device allocated {{worker}}"),
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
