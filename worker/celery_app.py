"""The worker's Celery app: model loaded once per pool process, never at import.

Run as `celery -A worker.celery_app worker --pool prefork --concurrency 1`
(`sam2fleet worker` does this). The model lives in the pool's child process, so
the supervising parent can replace it if it dies, and the parent notices a child
killed mid-job and requeues that job (acks late + reject on worker lost).
"""

from __future__ import annotations

import logging
import os
import sys

from celery.signals import worker_init, worker_process_init, worker_process_shutdown

from shared.queue import make_celery
from shared.settings import get_settings
from worker import runtime

log = logging.getLogger(__name__)

app = make_celery(get_settings())

import worker.tasks  # noqa: E402,F401  registers the task on this app


@worker_init.connect
def _check_weights(**_: object) -> None:
    # Fail fast in the supervising process: a missing checkpoint should stop the
    # worker with a clear message, not make the pool respawn children forever.
    # Celery swallows exceptions raised here and then hangs, hence the hard exit.
    from shared.errors import ModelUnavailable
    from worker.weights import resolve_weights

    try:
        resolve_weights(get_settings())
    except ModelUnavailable as exc:
        log.error("%s", exc.message)
        sys.stderr.flush()
        os._exit(2)


@worker_process_init.connect
def _load_model(**_: object) -> None:
    runtime.start(get_settings())


@worker_process_shutdown.connect
def _unregister(**_: object) -> None:
    runtime.stop()
