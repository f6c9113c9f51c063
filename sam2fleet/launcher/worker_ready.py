"""`sam2fleet worker-ready`: has the worker in this container finished its warm-up?

The exec probe of a worker container (Kubernetes startup and readiness probes). A
worker's pool process writes its heartbeat `{prefix}:worker:{hostname}:{pid}` only
after the model is loaded and a warm-up inference ran, then refreshes it every
`heartbeat_interval_s` with a TTL of `heartbeat_ttl_s`. So a warm heartbeat under
this host's name, fresh and for the configured model, says this worker can take
jobs; none says it cannot yet (model loading, compiling) or no longer (the pool
process died, Redis is out of reach). In a pod the host name is the pod's name, so
another pod's worker never answers for this one.

Reads Redis only: no torch, no Celery, so a probe every few seconds stays cheap.
"""

from __future__ import annotations

import socket
import sys
import time

import redis

from sam2fleet.shared import redis_clients
from sam2fleet.shared.records import Heartbeat, Keys
from sam2fleet.shared.settings import Settings, get_settings


def warm_heartbeats(
    client: redis.Redis, settings: Settings, host: str, now: float | None = None
) -> list[Heartbeat]:
    """Heartbeats of warm workers of the configured model on `host`, heard from
    within the heartbeat window."""
    now = time.time() if now is None else now
    keys = Keys(settings.key_prefix)
    found = []
    for key in client.scan_iter(match=keys.worker(f"{host}:*"), count=100):
        beat = Heartbeat.from_redis(client.hgetall(key))
        if (
            beat is not None
            and beat.warm
            and beat.model == settings.model
            and beat.age(now) <= settings.heartbeat_ttl_s
        ):
            found.append(beat)
    return found


def run(settings: Settings | None = None, host: str | None = None) -> int:
    """0 when a warm worker reports from this host, else 1, with one line saying why."""
    settings = settings or get_settings()
    host = host or socket.gethostname()
    client = redis_clients.sync_client(
        settings.redis_url, socket_connect_timeout=3, socket_timeout=3
    )
    try:
        warm = warm_heartbeats(client, settings, host)
    except (redis.RedisError, OSError) as exc:
        print(f"not ready: Redis unreachable ({type(exc).__name__})", file=sys.stderr)
        return 1
    finally:
        redis_clients.close_sync(client)
    if not warm:
        print(
            f"not ready: no warm {settings.model} worker on {host} heard from within "
            f"{settings.heartbeat_ttl_s:g} s",
            file=sys.stderr,
        )
        return 1
    print(f"ready: {len(warm)} warm {settings.model} worker(s) on {host}")
    return 0
