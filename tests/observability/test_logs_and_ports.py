"""Log formatting and the per-worker metrics ports of `sam2fleet up`; no processes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from sam2fleet.launcher.supervisor import Fleet
from sam2fleet.shared.logs import JobIdFilter, JsonFormatter, TextFormatter, job_context
from sam2fleet.shared.settings import Settings


def record(name: str, msg: str, args: object = None) -> logging.LogRecord:
    rec = logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)  # type: ignore[arg-type]
    JobIdFilter().filter(rec)
    return rec


def test_json_lines_carry_the_job_id_from_the_context() -> None:
    with job_context("a" * 32):
        inside = json.loads(
            JsonFormatter("worker").format(record("sam2fleet.worker.tasks", "x %d", (1,)))
        )
    outside = json.loads(JsonFormatter("worker").format(record("sam2fleet.worker.tasks", "y")))
    assert inside["job_id"] == "a" * 32 and inside["message"] == "x 1"
    assert inside["service"] == "worker" and inside["level"] == "INFO"
    assert "job_id" not in outside


def test_celery_task_lines_carry_the_job_id_from_their_arguments() -> None:
    # The API sends each job with task_id = job id, so Celery's own lines name it.
    rec = record(
        "celery.worker.strategy",
        "Task %(name)s[%(id)s] received",
        {"name": "sam2fleet.segment", "id": "b" * 32},
    )
    assert json.loads(JsonFormatter("worker").format(rec))["job_id"] == "b" * 32
    assert TextFormatter().format(rec).endswith(f"[job {'b' * 32}]")


def test_up_gives_each_worker_its_own_metrics_port(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(Fleet, "visible_gpus", lambda self: [])
    fleet = Fleet(Settings(worker_metrics_port=9200), "127.0.0.1", 8000, tmp_path, workers=3)
    fleet.plan()
    ports = [c.env.get("SAM2FLEET_WORKER_METRICS_PORT") for c in fleet.children if c.name != "api"]
    assert ports == ["9200", "9201", "9202"]
