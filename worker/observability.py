"""Celery signal hooks of the worker: its node name, log format, the job id on log lines.

Imported by `worker/celery_app.py`; each hook is a few lines over `shared/logs.py`.
"""

from __future__ import annotations

import socket
from contextvars import Token
from typing import Any

from celery.signals import celeryd_init, setup_logging, task_postrun, task_prerun

from sam2fleet.shared.logs import JOB_ID, configure_logging
from sam2fleet.shared.queue import SEGMENT_TASK
from sam2fleet.shared.settings import get_settings

_node_name: str | None = None
_tokens: dict[str, Token[str | None]] = {}


def node_name() -> str:
    """The Celery node name (`w0@host`, from `sam2fleet worker --name w0`): the
    `worker` label. Set in the supervisor before the pool forks, so children inherit it;
    bounded by the fleet's size, unlike a pid."""
    return _node_name or socket.gethostname()


@celeryd_init.connect
def _remember_node_name(sender: str | None = None, **_: Any) -> None:
    global _node_name
    _node_name = sender


@setup_logging.connect
def _configure_logging(loglevel: int | str | None = None, **_: Any) -> None:
    # A receiver here makes Celery leave logging alone; our handler formats text or JSON.
    configure_logging(get_settings().log_format, loglevel or "INFO", service="worker")


@task_prerun.connect
def _bind_job(task_id: str, task: Any, args: Any = None, **_: Any) -> None:
    if getattr(task, "name", None) == SEGMENT_TASK and args:
        _tokens[task_id] = JOB_ID.set(str(args[0]))


@task_postrun.connect
def _unbind_job(task_id: str, **_: Any) -> None:
    token = _tokens.pop(task_id, None)
    if token is not None:
        JOB_ID.reset(token)
