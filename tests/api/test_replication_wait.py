"""What a 202 promises with SAM2FLEET_REDIS_MIN_REPLICAS_ACK: the job is on a replica.

A real primary and a real replica; no worker (a stand-in heartbeat), so jobs stay
queued where the test can look for them on the replica.
"""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sam2fleet.launcher.redis_server import free_port, wait_until_answers
from sam2fleet.shared.records import Keys
from sam2fleet.shared.settings import Settings
from tests.api.conftest import serve
from tests.api.test_access_and_overload import fake_warm_worker
from tests.support import RedisServer, encode, scene

BOX = [{"box": [2, 2, 40, 30]}]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[RedisServer, subprocess.Popen[bytes], str]]:
    primary = RedisServer.start(tmp_path / "primary")
    with redis.Redis.from_url(primary.url) as r:
        r.config_set("repl-diskless-sync-delay", 0)  # sync the replica now, not in 5 s
    port = free_port()
    (tmp_path / "replica").mkdir()
    replica = subprocess.Popen(
        [primary.binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--dir", str(tmp_path / "replica"), "--replicaof", "127.0.0.1", str(primary.port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    wait_until_answers(url, replica)
    # Online as the primary sees it: after a sync the primary counts a replica only
    # once it has acknowledged the stream (up to a second later).
    r = redis.Redis.from_url(primary.url)
    deadline = time.monotonic() + 20
    while r.info("replication").get("slave0", {}).get("state") != "online":
        assert time.monotonic() < deadline, "the replica never synced"
        time.sleep(0.05)
    r.close()
    yield primary, replica, url
    replica.terminate()
    replica.wait(timeout=10)
    primary.stop()


def job_body(seed: int) -> dict:
    png = encode(scene(64, 48, seed=seed))
    return {"image": base64.b64encode(png).decode(), "prompts": BOX}


def test_a_202_means_a_replica_holds_the_job_and_its_message(
    pair: tuple[RedisServer, subprocess.Popen[bytes], str], prefix: str
) -> None:
    primary, replica, replica_url = pair
    settings = Settings(
        redis_url=primary.url,
        key_prefix=prefix,
        redis_min_replicas_ack=1,
        redis_replica_ack_timeout_ms=1000,
    )
    keys = Keys(prefix)
    main, copy = redis.Redis.from_url(primary.url), redis.Redis.from_url(replica_url)
    fake_warm_worker(main, settings)
    with serve(settings) as api:
        for seed in range(5):
            r = api.post("/v1/jobs", json=job_body(seed))
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            # Read at once, on the replica: the record and the message are there already.
            assert copy.hget(keys.job(job_id), "status") == b"queued"
            messages = copy.lrange(keys.queue(settings.model), 0, -1)
            assert any(job_id.encode() in m for m in messages)

        # The replica gone: the job cannot be made safe, so it is withdrawn, and the
        # client is told 503 in about the timeout rather than promised what may vanish.
        replica.terminate()
        replica.wait(timeout=10)
        jobs_before = set(main.scan_iter(keys.job("*")))
        started = time.monotonic()
        r = api.post("/v1/jobs", json=job_body(99))
        took = time.monotonic() - started
        assert r.status_code == 503, r.text
        assert r.json()["error"]["type"] == "unavailable"
        assert "replica" in r.json()["error"]["message"]
        assert int(r.headers["retry-after"]) > 0
        assert 1.0 <= took < 4, took
        assert set(main.scan_iter(keys.job("*"))) == jobs_before  # no record left behind

    # Not asked for (0): a lone primary answers 202 as before.
    alone = settings.model_copy(update={"redis_min_replicas_ack": 0})
    with serve(alone) as api:
        assert api.post("/v1/jobs", json=job_body(100)).status_code == 202
    main.close()
    copy.close()
