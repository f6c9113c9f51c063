"""Redis restarted or gone: workers reconnect, accepted jobs survive, the API says 503."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import SMALL
from tests.support import Fleet, RedisServer, encode, fleet_env, scene
from tests.system.client import b64, run, submit, wait

BODY_PROMPTS = [{"box": [5, 5, 60, 50]}]


def body(seed: int) -> dict:
    return {"image": b64(encode(scene(96, 72, seed=seed))), "prompts": BODY_PROMPTS}


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer.start(tmp_path / "redis", appendonly=True)
    yield server
    server.stop()


def restart(server: RedisServer) -> None:
    """Stop (SIGTERM: AOF flushed) and start again on the same port and data."""
    server.stop()
    again = RedisServer.start(server.data_dir, appendonly=True, port=server.port)
    server.process = again.process


@pytest.fixture
def fleet(aof_redis: RedisServer, tiny_checkpoint: Path, tmp_path: Path) -> Iterator[Fleet]:
    (tmp_path / "logs").mkdir()
    f = Fleet(
        fleet_env(
            aof_redis.url,
            tiny_checkpoint,
            "rds",
            SMALL,
            SAM2FLEET_FAULT_INJECTION="1",
            SAM2FLEET_HEARTBEAT_TTL_S="4",
        ),
        tmp_path / "logs",
    )
    f.start_api()
    yield f
    f.stop()


def test_readiness_follows_warm_workers(fleet: Fleet) -> None:
    deadline = time.monotonic() + 30
    while True:  # API up, no worker yet: not ready, and it says why
        try:
            r = httpx.get(f"{fleet.base_url}/readyz", timeout=2)
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert r.status_code == 503 and "no warm worker" in r.json()["reason"]
    fleet.start_worker("w0")
    fleet.wait_ready()  # green once the worker finished its warm-up inference
    fleet.procs["w0"].kill()  # the supervisor only; its pool process exits with it
    fleet.procs["w0"].wait()
    deadline = time.monotonic() + 30
    while httpx.get(f"{fleet.base_url}/readyz").status_code != 503:
        assert time.monotonic() < deadline, "still ready with no worker"
        time.sleep(0.2)


def test_redis_restarts_lose_no_accepted_job(fleet: Fleet, aof_redis: RedisServer) -> None:
    fleet.start_worker("w0")
    fleet.wait_ready()
    # Idle worker, Redis restarted: it reconnects by itself and takes new jobs.
    restart(aof_redis)
    fleet.wait_ready()
    assert run(fleet.base_url, body(1))["status"] == "succeeded"

    # Restarted while a job runs and two more wait in the queue.
    import redis as redis_lib

    r = redis_lib.Redis.from_url(aof_redis.url)
    from sam2fleet.shared.images import image_id_for

    slow = body(2)
    r.set(f"rds:fault:{image_id_for(encode(scene(96, 72, seed=2)))}", "sleep:3")
    running = submit(fleet.base_url, slow)
    queued = [submit(fleet.base_url, body(s)) for s in (3, 4)]
    deadline = time.monotonic() + 30
    while httpx.get(f"{fleet.base_url}/v1/jobs/{running['id']}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # At once, not after AOF's one-second fsync: Redis flushes the AOF on SIGTERM, so
    # a restart straight after the submits must lose none of them.
    restart(aof_redis)
    for job in (running, *queued):
        done = wait(fleet.base_url, job["id"], timeout=60)
        assert done["status"] == "succeeded", done
    r.close()


def test_redis_down_answers_503_fast(fleet: Fleet, aof_redis: RedisServer) -> None:
    fleet.start_worker("w0")
    fleet.wait_ready()
    aof_redis.stop()
    started = time.monotonic()
    r = httpx.post(f"{fleet.base_url}/v1/jobs", json=body(5), timeout=10)
    assert time.monotonic() - started < 3
    assert r.status_code == 503 and int(r.headers["retry-after"]) > 0
    ready = httpx.get(f"{fleet.base_url}/readyz", timeout=10)
    assert ready.status_code == 503 and "redis unreachable" in ready.json()["reason"]
    restart(aof_redis)
    fleet.wait_ready()
    assert run(fleet.base_url, body(6))["status"] == "succeeded"
