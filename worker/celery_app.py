"""The worker's Celery app: model loaded once per pool process, never at import.

Run as `celery -A sam2fleet.worker.celery_app worker --pool prefork --concurrency 1`
(`sam2fleet worker` does this). The model lives in the pool's child process, so
the supervising parent can replace it if it dies, and the parent notices a child
killed mid-job and requeues that job (acks late + reject on worker lost).

The supervising parent never imports torch: it forks the pool, and a forked child of
a process whose OpenMP thread pool has started hangs on its first parallel torch
operation. tests/worker/test_fork_safety.py holds the whole module to that.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

# Before torch touches CUDA: with image sizes that vary job to job, expandable
# segments keep the caching allocator from fragmenting into many odd-sized blocks.
# An explicit setting in the environment wins.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
# SAM 2's video predictor draws a tqdm progress bar per tracking pass: noise in logs.
os.environ.setdefault("TQDM_DISABLE", "1")

from celery.exceptions import TimeLimitExceeded
from celery.signals import (
    celeryd_after_setup,
    task_failure,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)

from sam2fleet.shared.queue import make_celery
from sam2fleet.shared.records import Keys
from sam2fleet.shared.settings import get_settings
from sam2fleet.worker import observability  # noqa: F401  signal hooks: node name, logs, job id

log = logging.getLogger(__name__)

app = make_celery(get_settings())

import sam2fleet.worker.tasks  # noqa: E402,F401  registers the task on this app


@worker_init.connect
def _check_weights(**_: object) -> None:
    # Fail fast in the supervising process: a missing checkpoint should stop the
    # worker with a clear message, not make the pool respawn children forever.
    # Celery swallows exceptions raised here and then hangs, hence the hard exit.
    # This process forks the pool next, so it runs no torch (worker/weights.py):
    # a missing random checkpoint is written by a subprocess.
    from sam2fleet.shared.errors import ModelUnavailable
    from sam2fleet.worker.weights import prepare_weights

    try:
        prepare_weights(get_settings())
    except ModelUnavailable as exc:
        log.error("%s", exc.message)
        sys.stderr.flush()
        os._exit(2)


@worker_init.connect
def _refuse_cluster(**_: object) -> None:
    # A cluster cannot hold Celery's queues: say so and stop, rather than fail later
    # with CROSSSLOT errors in the middle of a job. (A bad URL never gets this far:
    # the settings refuse it.)
    from sam2fleet.shared import redis_clients

    client = redis_clients.sync_client(
        get_settings().redis_url, socket_timeout=5, socket_connect_timeout=5
    )
    try:
        redis_clients.refuse_cluster(client)
    except redis_clients.ClusterRefused as exc:
        log.error("%s", exc)
        sys.stderr.flush()
        os._exit(2)
    finally:
        redis_clients.close_sync(client)


@celeryd_after_setup.connect
def _consume_private_queue(sender: str, instance: object, **_: object) -> None:
    # Besides the model's shared queue, each worker takes jobs routed to it alone
    # because it holds their image's embedding (image affinity).
    settings = get_settings()
    queue = Keys(settings.key_prefix).private_queue(settings.model, sender, os.getpid())
    instance.app.amqp.queues.select_add(queue)  # type: ignore[attr-defined]


@celeryd_after_setup.connect
def _beat_as_supervisor(sender: str, **_: object) -> None:
    # The supervisor holds the broker connection and so the job's unacknowledged
    # message: its own beat tells a sweeping worker whether a dead model process's
    # message is being requeued by its supervisor or was lost with the whole worker
    # (worker/takeover.py). Started before the pool takes any job.
    import threading

    import redis

    from sam2fleet.shared import redis_clients

    settings = get_settings()
    key = Keys(settings.key_prefix).supervisor(sender, os.getpid())
    client = redis_clients.sync_client(
        settings.redis_url, socket_timeout=5, socket_connect_timeout=5
    )

    def beat() -> None:
        while True:
            try:
                redis_clients.follow_primary(client)  # Sentinel: the primary now
                client.set(key, "1", px=int(settings.heartbeat_ttl_s * 1000))
            except redis.RedisError as exc:
                log.warning("supervisor heartbeat failed: %s", exc)
            time.sleep(settings.heartbeat_interval_s)

    threading.Thread(target=beat, daemon=True, name="sam2fleet-supervisor-beat").start()


@worker_process_init.connect
def _load_model(**_: object) -> None:
    from sam2fleet.worker import runtime  # imports torch: in the pool process only

    runtime.start(get_settings())


@worker_process_shutdown.connect
def _unregister(**_: object) -> None:
    from sam2fleet.worker import runtime

    runtime.stop()


@task_failure.connect
def _hard_time_limit(
    sender: object = None,
    exception: BaseException | None = None,
    args: tuple[Any, ...] | list[Any] | None = None,
    **_: object,
) -> None:
    # A job past its hard limit is killed with its pool process, so it cannot write
    # its own failure; Celery reports it here, in the supervising process.
    if not isinstance(exception, TimeLimitExceeded) or not args:
        return
    from sam2fleet.shared import redis_clients
    from sam2fleet.shared.errors import JobTimeout
    from sam2fleet.worker.store import JobStore

    settings = get_settings()
    client = redis_clients.sync_client(settings.redis_url, socket_timeout=5)
    try:
        JobStore(client, Keys(settings.key_prefix), retry_s=settings.redis_retry_s).fail(
            str(args[0]),
            JobTimeout(
                "the job ran past its hard time limit; its worker process was replaced"
            ).to_body(),
        )
    finally:
        redis_clients.close_sync(client)
