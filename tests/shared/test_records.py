"""The job record's terminal-write script, run against a real Redis through the
worker's store: one outcome is kept, and every attempt to write one is counted."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from sam2fleet.shared.errors import JobTimeout
from sam2fleet.shared.records import JobRecord, Keys
from sam2fleet.shared.schemas import JobSpec, JobStatus
from sam2fleet.worker.store import JobStore
from tests.support import RedisServer

SPEC = JobSpec(mode="auto")


@pytest.fixture
def store(redis_server: RedisServer, prefix: str) -> Iterator[JobStore]:
    client = redis.Redis.from_url(redis_server.url)
    yield JobStore(client, Keys(prefix), retry_s=0)
    client.close()


def queued(store: JobStore, job_id: str) -> None:
    record = JobRecord.new(job_id, SPEC, "sam2.1_hiera_tiny", "img", "anon")
    store.redis.hset(store.keys.job(job_id), mapping=record.to_redis())


def test_a_job_run_twice_to_the_end_shows_two_terminal_attempts(store: JobStore) -> None:
    queued(store, "twice")
    assert store.start("twice") is not None
    assert store.succeed("twice", {"masks": ["first"]})
    # A second execution of the same job (a redelivery after a lost acknowledgement):
    # its result is refused, but the attempt is on the record.
    assert store.start("twice") is None
    assert not store.succeed("twice", {"masks": ["second"]})
    assert not store.fail("twice", JobTimeout("late").to_body())
    record = store.record("twice")
    assert record is not None
    assert record.terminal_attempts == 3
    assert record.status is JobStatus.succeeded and record.error is None
    assert json.loads(store.redis.get(store.keys.result("twice")) or b"") == {"masks": ["first"]}


def test_one_run_shows_one_terminal_attempt(store: JobStore) -> None:
    queued(store, "once")
    fresh = store.record("once")
    assert fresh is not None and fresh.terminal_attempts == 0
    store.start("once")
    assert store.fail("once", JobTimeout("too slow").to_body())
    record = store.record("once")
    assert record is not None and record.terminal_attempts == 1
    assert record.status is JobStatus.failed and record.error is not None
    assert store.redis.exists(store.keys.result("once")) == 0


def test_a_write_for_an_expired_job_recreates_nothing(store: JobStore) -> None:
    assert not store.succeed("gone", {"masks": []})
    assert store.redis.exists(store.keys.job("gone"), store.keys.result("gone")) == 0
