"""A job's outcome counts once a replica holds it (Redis Sentinel). Redis replicates
asynchronously, so a primary killed right after a worker's terminal write can take
the write along; the promoted replica then still says `running`, held by a worker
that is alive, and nothing would ever finish the job. The store waits for the
replicas after its write and, when the write is gone, writes the same outcome again.

Real servers: a primary and a second Redis that becomes its replica only after the
write. The failover's loss is played by the test (the record set back to `running`,
as the promoted replica would hold it) at the moment the write lands.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sam2fleet.shared.records import JobRecord, Keys
from sam2fleet.shared.schemas import JobSpec
from sam2fleet.worker.store import JobStore
from tests.support import RedisServer

PREFIX = "repl"
RESULT = {"masks": ["the one outcome"]}


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    primary = RedisServer.start(tmp_path / "primary")
    spare = RedisServer.start(tmp_path / "spare")
    yield primary, spare
    spare.stop()
    primary.stop()


def running_job(client: redis.Redis, store: JobStore, job_id: str) -> None:
    record = JobRecord.new(job_id, JobSpec(mode="auto"), "sam2.1_hiera_tiny", "img", "anon")
    client.hset(store.keys.job(job_id), mapping=record.to_redis())
    assert store.start(job_id) is not None


def store_for(url: str, replicas: int) -> JobStore:
    return JobStore(
        redis.Redis.from_url(url),
        Keys(PREFIX),
        retry_s=20,
        holder="host:1",
        replicas=replicas,
        replica_timeout_ms=200,
    )


def test_an_outcome_lost_before_any_replica_held_it_is_written_again(
    servers: tuple[RedisServer, RedisServer],
) -> None:
    primary, spare = servers
    r = redis.Redis.from_url(primary.url)
    store = store_for(primary.url, replicas=1)
    running_job(r, store, "lost")
    key = store.keys.job("lost")
    lost = threading.Event()

    def failover_loses_the_write() -> None:
        while r.hget(key, "status") != b"succeeded":
            time.sleep(0.005)
        # What the promoted replica holds: the job running, no outcome, no attempt at one.
        r.hset(key, mapping={"status": "running", "terminal_attempts": 0})
        r.delete(store.keys.result("lost"))
        lost.set()
        redis.Redis.from_url(spare.url).replicaof("127.0.0.1", primary.port)

    thread = threading.Thread(target=failover_loses_the_write, daemon=True)
    thread.start()
    assert store.succeed("lost", RESULT)
    thread.join(timeout=10)
    assert lost.is_set()
    assert store.rewritten == 1
    record = JobRecord.from_redis(r.hgetall(key))
    assert record is not None and record.status == "succeeded"
    assert record.terminal_attempts == 1  # the outcome again, not a second run's
    assert json.loads(r.get(store.keys.result("lost")) or b"null") == RESULT
    # The replica holds it now.
    replica = redis.Redis.from_url(spare.url)
    assert replica.hget(key, "status") == b"succeeded"


def test_a_kept_outcome_is_not_written_twice_while_waiting_for_a_replica(
    servers: tuple[RedisServer, RedisServer],
) -> None:
    primary, spare = servers
    r = redis.Redis.from_url(primary.url)
    store = store_for(primary.url, replicas=1)
    running_job(r, store, "kept")
    # The replica attaches a moment after the write: WAIT times out at first.
    timer = threading.Timer(
        0.5, lambda: redis.Redis.from_url(spare.url).replicaof("127.0.0.1", primary.port)
    )
    timer.start()
    assert store.succeed("kept", RESULT)
    timer.join()
    assert store.rewritten == 0
    record = JobRecord.from_redis(r.hgetall(store.keys.job("kept")))
    assert record is not None and record.terminal_attempts == 1
    assert redis.Redis.from_url(spare.url).hget(store.keys.job("kept"), "status") == b"succeeded"


def test_one_redis_waits_for_nothing(servers: tuple[RedisServer, RedisServer]) -> None:
    primary, _ = servers
    r = redis.Redis.from_url(primary.url)
    store = store_for(primary.url, replicas=0)
    running_job(r, store, "alone")
    started = time.monotonic()
    assert store.succeed("alone", RESULT)
    assert time.monotonic() - started < 0.2  # no WAIT timeout paid
    assert store.rewritten == 0
