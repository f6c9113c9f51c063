"""Both /metrics endpoints after real jobs: every family present, values that add up."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict

import httpx
from prometheus_client.parser import text_string_to_metric_families

from sam2fleet.shared.metrics import STAGES
from tests.observability.conftest import WORKERS, ObsFleet, Traffic

API_FAMILIES = {
    "sam2fleet_http_requests": "counter",
    "sam2fleet_http_request_duration_seconds": "histogram",
    "sam2fleet_http_request_size_bytes": "histogram",
    "sam2fleet_http_errors": "counter",
    "sam2fleet_jobs_submitted": "counter",
    "sam2fleet_queue_depth": "gauge",
    "sam2fleet_workers_ready": "gauge",
    "sam2fleet_redis_up": "gauge",
}
WORKER_FAMILIES = {
    "sam2fleet_jobs_finished": "counter",
    "sam2fleet_job_errors": "counter",
    "sam2fleet_job_stage_duration_seconds": "histogram",
    "sam2fleet_job_duration_seconds": "histogram",
    "sam2fleet_masks_returned": "counter",
    "sam2fleet_batch_size": "histogram",
    "sam2fleet_embedding_cache_hits": "counter",
    "sam2fleet_embedding_cache_misses": "counter",
    "sam2fleet_worker_up": "gauge",
    "sam2fleet_worker_last_heartbeat_timestamp_seconds": "gauge",
    "sam2fleet_model_load_seconds": "gauge",
    "sam2fleet_model_warmup_seconds": "gauge",
    "sam2fleet_gpu_memory_allocated_bytes": "gauge",
    "sam2fleet_gpu_memory_reserved_bytes": "gauge",
    "sam2fleet_gpu_memory_peak_bytes": "gauge",
    "sam2fleet_gpu_memory_driver_used_bytes": "gauge",
    "sam2fleet_gpu_memory_driver_total_bytes": "gauge",
    "sam2fleet_cuda_cache_clears": "counter",
    "sam2fleet_cuda_cache_released_bytes": "counter",
    "sam2fleet_fenced_writes": "counter",
    "sam2fleet_jobs_taken_over": "counter",
}
FORBIDDEN_LABELS = {"job_id", "id", "path", "image_id"}


def scrape(url: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    r = httpx.get(url, timeout=10)
    assert r.status_code == 200, r.text
    out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(r.text):
        assert family.name not in out
        out[family.name] = [(s.name, s.labels, s.value) for s in family.samples]
        out[family.name + ":type"] = [(family.type, {}, 0.0)]
    return out


def total(families: list[dict], sample: str, **labels: str) -> float:
    return sum(
        v
        for fam in families
        for samples in fam.values()
        for name, lab, v in samples
        if name == sample and all(lab.get(k) == val for k, val in labels.items())
    )


def test_every_family_is_exported_with_its_type(obs: ObsFleet, traffic: Traffic) -> None:
    api = scrape(f"{obs.api}/metrics")
    for name, kind in API_FAMILIES.items():
        assert name in api, f"API /metrics lacks {name}"
        assert api[name + ":type"][0][0] == kind, name
    for worker in WORKERS:
        scraped = scrape(obs.worker_url(worker))
        for name, kind in WORKER_FAMILIES.items():
            assert name in scraped, f"worker {worker} /metrics lacks {name}"
            assert scraped[name + ":type"][0][0] == kind, name
        for name, samples in scraped.items():
            for _, labels, value in samples:
                assert not FORBIDDEN_LABELS & set(labels), (name, labels)
                assert isinstance(value, float) and not math.isnan(value), (name, labels)
                if name.startswith("sam2fleet_"):
                    assert labels.get("worker", f"{worker}@x").startswith(f"{worker}@")
        # A CPU worker reports zero GPU memory on device "cpu" rather than no series.
        for key in ("allocated", "reserved", "peak", "driver_used", "driver_total"):
            ((_, labels, value),) = scraped[f"sam2fleet_gpu_memory_{key}_bytes"]
            assert labels["device"] == "cpu" and value == 0.0
        ((_, labels, up),) = scraped["sam2fleet_worker_up"]
        assert up == 1.0 and labels["model"] == "sam2.1_hiera_tiny"
        ((_, _, load),) = scraped["sam2fleet_model_load_seconds"]
        assert load > 0
        ((_, _, beat),) = scraped["sam2fleet_worker_last_heartbeat_timestamp_seconds"]
        assert beat > 1.6e9


def test_worker_metrics_add_up_across_workers(obs: ObsFleet, traffic: Traffic) -> None:
    workers = [scrape(obs.worker_url(w)) for w in WORKERS]
    api = scrape(f"{obs.api}/metrics")
    tiny = {"model": "sam2.1_hiera_tiny"}
    for mode, ids in traffic.succeeded.items():
        done = total(workers, "sam2fleet_jobs_finished_total", outcome="succeeded", mode=mode)
        assert done == len(ids), (mode, done)
        e2e = total(workers, "sam2fleet_job_duration_seconds_count", outcome="succeeded", mode=mode)
        assert e2e == len(ids)
        for stage in STAGES:
            count = total(
                workers, "sam2fleet_job_stage_duration_seconds_count", stage=stage, mode=mode
            )
            # queue is observed for every started job (failed ones too), others on success
            assert count >= len(ids), (mode, stage, count)
        submitted = total([api], "sam2fleet_jobs_submitted_total", mode=mode, **tiny)
        assert submitted >= len(ids)
    assert total(workers, "sam2fleet_job_errors_total", error_type="image_too_large") == len(
        traffic.failed
    )
    assert total(workers, "sam2fleet_jobs_finished_total", outcome="failed") == len(traffic.failed)
    n_prompt_masks = total(workers, "sam2fleet_masks_returned_total", mode="prompt")
    assert n_prompt_masks >= 3 * len(traffic.succeeded["prompt"])  # multimask: 3 per object
    # The API's view of the fleet.
    assert total([api], "sam2fleet_workers_ready", **tiny) == len(WORKERS)
    assert total([api], "sam2fleet_redis_up") == 1
    assert total([api], "sam2fleet_queue_depth", **tiny) == 0


def test_histogram_counts_grow_with_jobs(obs: ObsFleet, traffic: Traffic) -> None:
    def counts() -> tuple[float, float, float]:
        workers = [scrape(obs.worker_url(w)) for w in WORKERS]
        api = scrape(f"{obs.api}/metrics")
        return (
            total(workers, "sam2fleet_job_stage_duration_seconds_count", stage="embed"),
            total(workers, "sam2fleet_job_duration_seconds_count"),
            total(
                [api],
                "sam2fleet_http_request_duration_seconds_count",
                route="/v1/jobs",
                method="POST",
            ),
        )

    before = counts()
    obs.run_traffic(traffic)
    after = counts()
    assert after[0] == before[0] + 3  # two prompt jobs and one automatic job embedded
    assert after[1] == before[1] + 5  # and the failing one and the video job, end to end
    assert after[2] >= before[2] + 7


def test_gateway_labels_routes_by_template_and_errors_by_type(
    obs: ObsFleet, traffic: Traffic
) -> None:
    api = scrape(f"{obs.api}/metrics")
    routes = {lab["route"] for _, lab, _ in api["sam2fleet_http_requests"]}
    assert "/v1/jobs/{job_id}" in routes and "/v1/jobs" in routes
    assert not any(re.search(r"[0-9a-f]{32}", r) for r in routes), routes
    errors = {
        (lab["status"], lab["error_type"]) for _, lab, v in api["sam2fleet_http_errors"] if v > 0
    }
    assert ("503", "no_worker_ready") in errors and ("404", "not_found") in errors, errors
    sizes = total([api], "sam2fleet_http_request_size_bytes_sum", route="/v1/jobs")
    assert sizes > 10_000  # base64 images in the bodies


def test_json_logs_carry_the_job_id(obs: ObsFleet, traffic: Traffic) -> None:
    ids = set(traffic.all_ids())
    seen: dict[str, set[str]] = defaultdict(set)
    for name in (*WORKERS, "api"):
        path = obs.fleet.log_dir / f"{name}.log"
        for line in path.read_text(errors="replace").splitlines():
            mentioned = set(re.findall(r"[0-9a-f]{32}", line)) & ids
            if not line.startswith("{"):
                assert not mentioned, f"{name}: a line about a job is not JSON: {line}"
                continue
            record = json.loads(line)
            assert {"ts", "level", "logger", "message"} <= set(record)
            for job_id in mentioned:
                assert record.get("job_id") == job_id, f"{name}: {line}"
            if "job_id" in record:
                seen[name].add(record["job_id"])
    assert ids <= seen[WORKERS[0]] | seen[WORKERS[1]], "every job has worker log lines"
    assert ids <= seen["api"], "every job has API log lines (submit, poll)"
