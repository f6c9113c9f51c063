"""`sam2fleet worker-ready`, the worker pod's probe, against a real Redis.

Heartbeats are written as a worker writes them (`Heartbeat.to_redis` under
`Keys.worker`), one property wrong at a time; only a warm, fresh heartbeat of the
configured model from this very host makes the probe succeed. The probe run against
a real worker process is in tests/faults/test_scale_in.py.
"""

from __future__ import annotations

import time

import pytest
import redis

from sam2fleet.launcher.redis_server import free_port
from sam2fleet.launcher.worker_ready import run
from sam2fleet.shared.records import Heartbeat, Keys
from sam2fleet.shared.settings import Settings
from tests.deploy.k8s_manifests import clean_env  # noqa: F401  a fixture
from tests.support import RedisServer

HOST = "sam2fleet-worker-7d9c-x2k"
MODEL = "sam2.1_hiera_small"

pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def settings(redis_server: RedisServer, request: pytest.FixtureRequest) -> Settings:
    return Settings(
        redis_url=redis_server.url,
        key_prefix=f"ready{abs(hash(request.node.name)) % 10**6}",
        model=MODEL,
        heartbeat_ttl_s=5,
    )


def beat(settings: Settings, name: str, *, model: str = MODEL, warm: bool = True, age: float = 0):
    client = redis.Redis.from_url(settings.redis_url)
    heartbeat = Heartbeat(
        model=model, device="cpu", weights="checkpoint", warm=warm, pid=7, queue="q",
        inflight="i", ts=time.time() - age,
    )  # fmt: skip
    client.hset(Keys(settings.key_prefix).worker(name), mapping=heartbeat.to_redis())
    client.close()


@pytest.mark.parametrize(
    ("written", "why"),
    [
        ({}, "no heartbeat at all"),
        ({"warm": False}, "still loading: heartbeat without warm-up"),
        ({"model": "sam2.1_hiera_tiny"}, "a worker of another model"),
        ({"age": 30}, "last heard from beyond heartbeat_ttl_s"),
        ({"host": "another-pod"}, "another pod's worker"),
        ({"host": HOST + "2"}, "a pod whose name starts like this one's"),
    ],
)
def test_not_ready(settings: Settings, written: dict, why: str, capsys) -> None:
    if written:
        host = written.pop("host", HOST)
        beat(settings, f"{host}:41", **written)
    assert run(settings, HOST) == 1, why
    assert "not ready" in capsys.readouterr().err


def test_ready_with_a_warm_fresh_heartbeat_from_this_host(settings: Settings, capsys) -> None:
    beat(settings, "another-pod:12")
    beat(settings, f"{HOST}:40", warm=False, age=30)  # the pool process replaced since
    beat(settings, f"{HOST}:41")
    assert run(settings, HOST) == 0
    assert f"1 warm {MODEL} worker(s) on {HOST}" in capsys.readouterr().out


def test_not_ready_when_redis_is_unreachable(capsys) -> None:
    unreachable = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert run(unreachable, HOST) == 1
    assert "Redis unreachable" in capsys.readouterr().err
