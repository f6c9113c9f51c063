"""Redis Sentinel: the primary SIGKILLed under load, the fleet follows the failover.

Real processes throughout: a primary, two replicas and three sentinels (all
`redis-server`), one worker and the API, every one of them given only the
`sentinel://` URL. The first sentinel of that URL is killed before anything starts
(kombu's sentinel transport has been reported to fail then), and the fleet must
keep working after losing its connections to the primary (kombu's transport has
been reported not to fail over then). Every job answered 202 must end with exactly
one result: counted from the workers' own log lines ("result written") and from
the record's count of finishing calls, not from the store's guard against
duplicates.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sam2fleet.launcher.redis_server import ensure_redis, free_port
from sam2fleet.launcher.supervisor import Fleet as UpFleet
from sam2fleet.shared import redis_clients
from sam2fleet.shared.images import image_id_for
from sam2fleet.shared.queue import make_celery
from sam2fleet.shared.settings import Settings
from tests.conftest import SMALL
from tests.redis_sentinel import SentinelSet
from tests.support import Fleet, encode, fleet_env, scene
from tests.system.client import b64, run

PREFIX = "snt"
WRITTEN = re.compile(r"job ([0-9a-f]{32}): result written")


class SentinelFleet(Fleet):
    sentinel: SentinelSet
    _seed: int = 0

    def body(self, fault: str | None = None) -> dict:
        self._seed += 1
        data = encode(scene(96, 72, seed=5000 + self._seed))
        if fault:
            with self.sentinel.client() as r:
                r.set(f"{PREFIX}:fault:{image_id_for(data)}", fault)
        return {"image": b64(data), "prompts": [{"box": [5, 5, 60, 50]}]}

    def result_writes(self) -> Counter[str]:
        found: Counter[str] = Counter()
        for path in self.log_dir.glob("w*.log"):
            found.update(WRITTEN.findall(path.read_text(errors="replace")))
        return found


@pytest.fixture(scope="module")
def fleet(
    tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SentinelFleet]:
    sentinel = SentinelSet.start(tmp_path_factory.mktemp("sentinel"), replicas=2)
    sentinel.kill_sentinel(sentinel.sentinel_order[0])  # first listed, down from the start
    logs = tmp_path_factory.mktemp("sentinel-logs")
    f = SentinelFleet(
        fleet_env(
            sentinel.url(),
            tiny_checkpoint,
            PREFIX,
            SMALL,
            SAM2FLEET_FAULT_INJECTION="1",
            # A job whose acknowledgement died with the primary comes back soon.
            SAM2FLEET_TASK_SOFT_TIME_LIMIT_S="10",
            SAM2FLEET_TASK_TIME_LIMIT_S="14",
            SAM2FLEET_VISIBILITY_TIMEOUT_S="20",
            SAM2FLEET_REDIS_RETRY_S="30",
        ),
        logs,
    )
    f.sentinel = sentinel
    f.start_worker("w0")
    f.start_api()
    try:
        f.wait_ready()
        yield f
    finally:
        f.stop()
        sentinel.stop()


def test_the_fleet_starts_and_serves_with_the_first_sentinel_down(fleet: SentinelFleet) -> None:
    assert fleet.sentinel.sentinels[fleet.sentinel.sentinel_order[0]].poll() is not None
    assert redis_clients.parse(fleet.env["SAM2FLEET_REDIS_URL"]).is_sentinel
    # With the first sentinel down, kombu's channels each spent seconds on redis-py's
    # retries against it, and a worker took a minute to take its first job. Every
    # channel a worker opens, and every client, must find the primary at once.
    url = fleet.env["SAM2FLEET_REDIS_URL"]
    started = time.monotonic()
    with make_celery(Settings(redis_url=url)).connection_for_write() as conn:
        for _ in range(4):
            channel = conn.channel()
            assert channel.client.ping()
            channel.close()
    client = redis_clients.sync_client(url, socket_timeout=5, socket_connect_timeout=5)
    assert client.ping()
    redis_clients.close_sync(client)
    took = time.monotonic() - started
    assert took < 5, f"{took:.1f}s to reach the primary past a dead sentinel"
    job = run(fleet.base_url, fleet.body(), timeout=30)
    assert job["status"] == "succeeded"
    assert fleet.result_writes()[job["id"]] == 1


def test_sam2fleet_up_uses_the_sentinel_set_and_starts_no_redis(
    fleet: SentinelFleet, tmp_path: Path
) -> None:
    url = fleet.env["SAM2FLEET_REDIS_URL"]
    handle = ensure_redis(url, tmp_path / "redis")
    assert (handle.url, handle.process, handle.source) == (url, None, "Redis Sentinel")
    up = UpFleet(Settings(redis_url=url), "127.0.0.1", 0, tmp_path, workers=1, redis=handle)
    up.plan()
    assert {c.env["SAM2FLEET_REDIS_URL"] for c in up.children} == {url}
    # No sentinel answers: it says so, and starts nothing in the set's place.
    dead = f"sentinel://127.0.0.1:{free_port()}/0?master=sam2fleet"
    with pytest.raises(RuntimeError, match="starts no Redis of its own"):
        ensure_redis(dead, tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_a_primary_short_of_replicas_sends_clients_back_to_the_sentinels(
    fleet: SentinelFleet,
) -> None:
    # A primary that no replica follows any more refuses writes (min-replicas-to-write):
    # the fleet's clients must take that as "primary lost" (a connection error, which
    # every caller retries through the sentinels), not as a failed command.
    url = fleet.env["SAM2FLEET_REDIS_URL"]
    no_retry = {"socket_timeout": 5, "retry": Retry(NoBackoff(), 0)}
    sync = redis_clients.sync_client(url, **no_retry)
    admin = fleet.sentinel.client()
    admin.config_set("min-replicas-to-write", 3)  # two replicas: never enough
    try:
        with pytest.raises(redis.ConnectionError, match="no replica left"):
            sync.set(f"{PREFIX}:probe", 1)

        async def write_async() -> None:
            client = redis_clients.async_client(url, socket_timeout=5)
            try:
                with pytest.raises(redis.ConnectionError, match="no replica left"):
                    await client.set(f"{PREFIX}:probe", 1)
            finally:
                await redis_clients.close_async(client)

        asyncio.run(write_async())
    finally:
        admin.config_set("min-replicas-to-write", 1)
        admin.close()
    assert sync.set(f"{PREFIX}:probe", 1)  # the same client, on a primary that takes it
    redis_clients.close_sync(sync)


class Submitter:
    """Submits jobs one after another, as a client would: 503s and dropped connections
    are retried; a job counts as accepted once the API answered 202."""

    def __init__(self, fleet: SentinelFleet) -> None:
        self.fleet = fleet
        self.accepted: list[str] = []
        self.refused: Counter[str] = Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            body = self.fleet.body()
            while not self.stop.is_set():
                try:
                    r = httpx.post(f"{self.fleet.base_url}/v1/jobs", json=body, timeout=30)
                except httpx.HTTPError as exc:
                    self.refused[type(exc).__name__] += 1
                    time.sleep(0.2)
                    continue
                if r.status_code == 202:
                    self.accepted.append(r.json()["id"])
                    break
                assert r.status_code == 503, r.text
                self.refused[r.json()["error"]["type"]] += 1
                time.sleep(0.2)
            time.sleep(0.3)

    def wait_accepted(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.accepted) < count:
            assert time.monotonic() < deadline, (self.accepted, self.refused)
            time.sleep(0.05)


def test_primary_killed_under_load_loses_no_accepted_job(fleet: SentinelFleet) -> None:
    sentinel = fleet.sentinel
    # One job in the worker's hands when the primary dies (a 3 s sleep on its image),
    # more queued behind it, more arriving all the while.
    running = httpx.post(f"{fleet.base_url}/v1/jobs", json=fleet.body("sleep:3"), timeout=30)
    assert running.status_code == 202, running.text
    load = Submitter(fleet)
    load.thread.start()
    load.wait_accepted(3)
    before = len(load.accepted)

    killed_at = time.monotonic()
    old = sentinel.kill_primary()
    new = sentinel.wait_failover(old)
    failover_s = time.monotonic() - killed_at
    # Jobs accepted after the failover exist only on the new primary: the worker
    # must have reconnected its consumer to run them, the API its publisher.
    load.wait_accepted(before + 4, timeout=90)
    load.stop.set()
    load.thread.join(timeout=60)
    first_after = httpx.get(
        f"{fleet.base_url}/v1/jobs/{load.accepted[before]}", params={"wait": 30}, timeout=40
    ).json()
    assert first_after["status"] == "succeeded", first_after
    recovered_s = time.monotonic() - killed_at
    assert recovered_s < 30, f"the fleet took {recovered_s:.0f}s to run a job after the kill"

    ids = [running.json()["id"], *load.accepted]
    for job_id in ids:
        r = httpx.get(f"{fleet.base_url}/v1/jobs/{job_id}", params={"wait": 60}, timeout=70)
        assert r.status_code == 200, f"accepted job {job_id} lost: {r.text}"
        assert r.json()["status"] == "succeeded", r.json()

    writes = fleet.result_writes()
    with sentinel.client(new) as r:
        finishing = {j: int(r.hget(f"{PREFIX}:job:{j}", "terminal_attempts") or 0) for j in ids}
        results = {j: r.exists(f"{PREFIX}:result:{j}") for j in ids}
    assert {j: writes[j] for j in ids} == dict.fromkeys(ids, 1), "each job: one result written"
    assert finishing == dict.fromkeys(ids, 1), "each job finished once"
    assert all(results.values())
    assert failover_s < 20, failover_s
    print(
        f"failover {failover_s:.1f}s, recovered {recovered_s:.1f}s; {len(ids)} jobs, "
        f"{len(ids) - before - 1} accepted after the kill; refused: {dict(load.refused)}"
    )
