"""The Celery app configuration both sides use. Imports no torch.

The gateway only sends messages by task name; the worker module registers the
task on an app built here, so both agree on the broker and its options.
"""

from __future__ import annotations

from celery import Celery

from sam2fleet.shared import redis_clients
from sam2fleet.shared.records import Keys
from sam2fleet.shared.settings import Settings

SEGMENT_TASK = "sam2fleet.segment"

# Where kombu's Redis transport keeps delivered, not yet acknowledged messages (its
# defaults; the fleet sets no `global_keyprefix`): a hash delivery tag -> the message
# with its exchange and routing key, and a zset delivery tag -> delivery time. Read
# by the sweep that requeues a dead worker's jobs (worker/takeover.py).
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"


def make_celery(settings: Settings) -> Celery:
    broker_url, transport = redis_clients.celery_broker(settings.redis_url)
    app = Celery("sam2fleet", broker=broker_url, set_as_current=False)
    app.conf.update(
        # The message carries only the job id; images and prompts live in Redis.
        task_serializer="json",
        accept_content=["json"],  # a pickled message is refused, never executed
        result_serializer="json",
        result_backend=None,  # results are written by the task itself, keyed by job id
        task_ignore_result=True,
        # Long GPU jobs: acknowledge only after the job is done, so a worker that
        # dies mid-job leaves the message to be redelivered, and take one job at a
        # time so a dead worker strands at most one.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # The pool process loads (and hashes) the model before it reports itself up;
        # Celery's 4 s default would kill it mid-load, again and again, under load.
        worker_proc_alive_timeout=600,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        broker_transport_options={
            # Redis redelivers unacknowledged messages after this; it must exceed the
            # hard time limit or a running job would be handed to a second worker.
            "visibility_timeout": settings.visibility_timeout_s,
            # Sweep for abandoned messages (their worker died whole) every few seconds
            # rather than kombu's default of roughly 100 s, so recovery takes about
            # the visibility timeout, not that plus minutes.
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 4)),
            "unacked_restore_throttle": 1,
            # A Redis that vanishes without closing the socket must not hang a publish.
            "socket_timeout": 15,
            "socket_connect_timeout": 5,
            # Sentinel: the primary's name and the sentinels' login
            # (shared/redis_clients.py); nothing for one Redis.
            **transport,
        },
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_default_queue=Keys(settings.key_prefix).queue(settings.model),
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app
