"""The sweep of dead workers' jobs and the fencing of their late writes, against a real
Redis, with Celery messages delivered through kombu's own Redis transport (so they sit
in its unacknowledged set exactly as a worker's delivery leaves them)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection

from sam2fleet.shared.queue import SEGMENT_TASK, UNACKED, UNACKED_INDEX, make_celery
from sam2fleet.shared.records import Heartbeat, JobRecord, Keys
from sam2fleet.shared.schemas import JobSpec, JobStatus
from sam2fleet.shared.settings import Settings
from sam2fleet.worker.store import JobStore
from sam2fleet.worker.takeover import Takeover
from tests.support import RedisServer

MODEL = "sam2.1_hiera_tiny"
SPEC = JobSpec(mode="prompt", prompts=[{"box": [1, 1, 5, 5]}])


class Host:
    """One worker's view of Redis: its store (named holder) and its sweeper."""

    def __init__(self, url: str, prefix: str, name: str) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url)
        self.keys = Keys(prefix)
        self.name = name
        self.supervisor = self.keys.supervisor(f"w@{name}", 1)
        self.store = JobStore(
            self.client, self.keys, retry_s=0, holder=name, supervisor=self.supervisor
        )
        self.takeover = Takeover(self.store)

    def beat(self) -> None:
        beat = Heartbeat(model=MODEL, device="cpu", weights="random", warm=True, pid=1,
                         queue="", inflight="")  # fmt: skip
        self.store.heartbeat(self.name, beat, 60)

    def die(self) -> None:
        self.store.forget_worker(self.name)  # as if its heartbeat's TTL had run out


@pytest.fixture
def hosts(redis_server: RedisServer, prefix: str) -> Iterator[tuple[Host, Host]]:
    a, b = Host(redis_server.url, prefix, "host-a:11"), Host(redis_server.url, prefix, "host-b:22")
    a.beat(), b.beat()
    yield a, b
    a.client.close(), b.client.close()


@pytest.fixture
def broker(redis_server: RedisServer, prefix: str) -> Iterator[Connection]:
    with Connection(redis_server.url) as conn:
        yield conn


def submit(host: Host, broker: Connection, job_id: str) -> None:
    """A queued job record and its Celery message, as the gateway writes them."""
    record = JobRecord.new(job_id, SPEC, MODEL, "img", "anon")
    host.client.hset(host.keys.job(job_id), mapping=record.to_redis())
    app = make_celery(Settings(redis_url=host.url, key_prefix=host.keys.prefix))
    app.send_task(SEGMENT_TASK, args=[job_id], task_id=job_id, queue=host.keys.queue(MODEL))


def deliver(host: Host, broker: Connection) -> str:
    """Take the next message as a Celery worker does (acks late): it moves into kombu's
    unacknowledged set. Returns its delivery tag; the message is never acknowledged."""
    message = broker.default_channel.basic_get(host.keys.queue(MODEL), no_ack=False)
    assert message is not None
    return str(message.delivery_tag)


def queued_messages(host: Host) -> list[dict[str, object]]:
    return [json.loads(m) for m in host.client.lrange(host.keys.queue(MODEL), 0, -1)]


def unacked_tags(host: Host) -> set[str]:
    return {t.decode() for t in host.client.hkeys(UNACKED)}


def test_a_lost_workers_job_is_requeued_once_and_its_late_write_fenced(
    hosts: tuple[Host, Host], broker: Connection
) -> None:
    a, b = hosts
    submit(a, broker, "j1")
    tag = deliver(a, broker)
    assert a.store.start("j1", tag) is not None
    assert tag in unacked_tags(a)
    assert b.takeover.sweep().released == 0  # a is alive: nothing to do
    a.die()  # supervisor never beat either: the whole worker is gone

    swept = b.takeover.sweep()
    assert (swept.released, swept.requeued) == (0, 1)  # released and requeued in one step
    assert tag not in unacked_tags(a) and a.client.zscore(UNACKED_INDEX, tag) is None
    [message] = queued_messages(a)
    headers, properties = message["headers"], message["properties"]
    assert isinstance(headers, dict) and isinstance(properties, dict)
    assert headers["id"] == "j1" and headers["redelivered"] is True
    assert properties["delivery_tag"] != tag  # a late ack of the old delivery cannot hit it
    record = a.store.record("j1")
    assert record is not None and record.status is JobStatus.queued and record.holder == ""
    # A second sweeper, or the same one again: nothing left to requeue.
    assert a.takeover.sweep().released == 0 and b.takeover.sweep().released == 0
    assert len(queued_messages(a)) == 1
    assert a.client.hlen(a.keys.holders()) == 0  # a left the registry; b holds nothing yet

    # The requeued message is an ordinary Celery delivery; b runs the job.
    new_tag = deliver(b, broker)
    started = b.store.start("j1", new_tag)
    assert started is not None and started.attempts == 2 and started.holder == b.name
    # a was only cut off: its late result is refused and counted, b's is the one kept.
    assert not a.store.succeed("j1", {"masks": ["from a"]})
    assert a.store.fenced_writes == 1
    assert b.store.succeed("j1", {"masks": ["from b"]})
    record = b.store.record("j1")
    assert record is not None and record.status is JobStatus.succeeded
    assert (record.terminal_attempts, record.fenced_writes) == (2, 1)
    assert json.loads(a.client.get(a.keys.result("j1")) or b"") == {"masks": ["from b"]}


def test_a_dead_model_process_with_a_live_supervisor_is_released_not_requeued(
    hosts: tuple[Host, Host], broker: Connection
) -> None:
    # The supervisor requeues its dead child's message itself (reject on worker lost):
    # the sweep only releases the job, or the job would run twice.
    a, b = hosts
    submit(a, broker, "j2")
    tag = deliver(a, broker)
    a.store.start("j2", tag)
    a.client.set(a.supervisor, "1", px=60_000)
    a.die()
    assert (b.takeover.sweep().released, b.takeover.requeued) == (1, 0)
    assert tag in unacked_tags(a) and queued_messages(a) == []
    record = a.store.record("j2")
    assert record is not None and record.status is JobStatus.queued
    assert (b.takeover.sweep().released, b.takeover.requeued) == (0, 0)  # still waiting
    # The supervisor dies too (its beat expires a moment after the model process's,
    # as when a whole host is lost): now the sweep requeues the message.
    a.client.delete(a.supervisor)
    assert b.takeover.sweep().requeued == 1
    assert tag not in unacked_tags(a) and len(queued_messages(a)) == 1
    assert b.takeover.sweep().requeued == 0 and a.client.hlen(a.keys.held(a.name)) == 0


def test_a_released_job_started_again_by_its_supervisor_is_left_to_its_new_holder(
    hosts: tuple[Host, Host], broker: Connection
) -> None:
    a, b = hosts
    submit(a, broker, "j5")
    tag = deliver(a, broker)
    a.store.start("j5", tag)
    a.client.set(a.supervisor, "1", px=60_000)
    a.die()
    assert b.takeover.sweep().released == 1
    # The supervisor's fresh model process starts the job again (same message).
    child = Host(a.url, a.keys.prefix, "host-a:12")
    child.beat()
    assert child.store.start("j5", tag) is not None
    a.client.delete(a.supervisor)
    assert b.takeover.sweep().requeued == 0  # it has a holder again: nothing to take
    assert tag in unacked_tags(a) and queued_messages(a) == []
    assert a.client.hlen(a.keys.held(a.name)) == 0
    child.client.close()


def test_jobs_taken_into_a_batch_are_released_without_a_message_of_their_own(
    hosts: tuple[Host, Host], broker: Connection
) -> None:
    a, b = hosts
    submit(a, broker, "j3")
    a.store.start("j3")  # taken into a batch: its message sits in a's in-flight list
    a.die()
    swept = b.takeover.sweep()
    assert (swept.released, swept.requeued) == (1, 0)
    assert a.client.hlen(a.keys.held(a.name)) == 0
    assert a.client.hexists(a.keys.holders(), a.name) == 0


def test_finished_jobs_of_a_dead_worker_are_only_forgotten(
    hosts: tuple[Host, Host], broker: Connection
) -> None:
    a, b = hosts
    submit(a, broker, "j4")
    tag = deliver(a, broker)
    a.store.start("j4", tag)
    assert a.store.succeed("j4", {"masks": []})
    a.die()
    assert b.takeover.sweep().released == 0
    record = a.store.record("j4")
    assert record is not None and record.status is JobStatus.succeeded


def test_many_sweepers_at_once_requeue_each_message_exactly_once(
    redis_server: RedisServer, prefix: str, broker: Connection
) -> None:
    dead = Host(redis_server.url, prefix, "lost:1")
    dead.beat()
    n = 20
    for i in range(n):
        submit(dead, broker, f"m{i}")
    for i in range(n):
        dead.store.start(f"m{i}", deliver(dead, broker))
    dead.die()
    sweepers = [Host(redis_server.url, prefix, f"live-{i}:{i}") for i in range(4)]
    barrier = threading.Barrier(len(sweepers))

    def sweep(host: Host) -> None:
        barrier.wait()
        host.takeover.sweep()

    threads = [threading.Thread(target=sweep, args=(h,)) for h in sweepers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(h.takeover.requeued for h in sweepers) == n
    ids = sorted(str(m["headers"]["id"]) for m in queued_messages(dead))  # type: ignore[index]
    assert ids == sorted(f"m{i}" for i in range(n))
    for h in [dead, *sweepers]:
        h.client.close()


def test_a_paused_worker_whose_job_nobody_took_yet_still_writes_it(
    hosts: tuple[Host, Host], broker: Connection
) -> None:
    # Its model process stalled past the heartbeat TTL while its supervisor beat on:
    # released, left to the supervisor. It resumes and finishes: nobody else holds the
    # job, so the write is taken (the supervisor then acknowledges the message).
    a, b = hosts
    submit(a, broker, "j6")
    a.store.start("j6", deliver(a, broker))
    a.client.set(a.supervisor, "1", px=60_000)
    a.die()
    assert b.takeover.sweep().released == 1
    assert a.store.succeed("j6", {"masks": []}) and a.store.fenced_writes == 0
    record = a.store.record("j6")
    assert record is not None and record.status is JobStatus.succeeded
    assert a.client.hlen(a.keys.held(a.name)) == 0
