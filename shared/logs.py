"""Log lines as text or JSON (setting `log_format`), with the job id on job lines.

The job a line is about is carried in a context variable: the worker sets it around
each task, the API around each request that names or creates a job. Celery's own
task lines ("Task sam2fleet.segment[<id>] received") carry the id in their
arguments; since the API sends each job with `task_id = job id`, the filter takes it
from there, so the supervisor's lines carry it too.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sam2fleet.shared.queue import SEGMENT_TASK

JOB_ID: ContextVar[str | None] = ContextVar("sam2fleet_job_id", default=None)

_TEXT_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(name)s: %(message)s"
# Attributes every LogRecord has; anything else was passed with `extra=` and is kept.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "job_id",
    "data",  # Celery's copy of its message arguments, already in `message`
    "taskName",
}


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    token = JOB_ID.set(job_id)
    try:
        yield
    finally:
        JOB_ID.reset(token)


def bind_job(job_id: str) -> None:
    """Tag the rest of the current request or task with `job_id`."""
    JOB_ID.set(job_id)


class JobIdFilter(logging.Filter):
    """Sets `record.job_id` (None when the line is about no job)."""

    def filter(self, record: logging.LogRecord) -> bool:
        job_id = getattr(record, "job_id", None) or JOB_ID.get()
        if job_id is None and record.name.startswith("celery"):
            args = record.args
            if isinstance(args, Mapping) and args.get("name") == SEGMENT_TASK:
                job_id = args.get("id")
        record.job_id = job_id
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, process, message, job_id, extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "process": record.processName,
            "pid": record.process,
            "message": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None)
        if job_id:
            out["job_id"] = job_id
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out and not key.startswith("_"):
                out[key] = value if isinstance(value, str | int | float | bool) else repr(value)
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        job_id = getattr(record, "job_id", None)
        if not job_id:
            return line
        first, sep, rest = line.partition("\n")  # keep the id on the line, not the traceback
        return f"{first} [job {job_id}]{sep}{rest}"


def configure_logging(log_format: str, level: int | str = "INFO", *, service: str) -> None:
    """One stderr handler on the root logger; replaces one installed here before."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_sam2fleet", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler._sam2fleet = True  # type: ignore[attr-defined]
    handler.addFilter(JobIdFilter())
    handler.setFormatter(JsonFormatter(service) if log_format == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
