"""Admission against a real Redis: what counts as waiting, the cap under concurrent
reserves, slots that lapse, and a submit whose enqueue fails giving its slot back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio as aredis

from sam2fleet.api.admission import RESERVATION_MS, Admission
from sam2fleet.api.service import JobService
from sam2fleet.launcher.redis_server import free_port
from sam2fleet.shared.errors import QueueFull, StorageFull, Unavailable
from sam2fleet.shared.queue import make_celery
from sam2fleet.shared.records import Keys
from sam2fleet.shared.schemas import JobSpec
from sam2fleet.shared.settings import Settings
from tests.api.test_access_and_overload import fake_warm_worker
from tests.support import encode, scene

MODEL = "sam2.1_hiera_tiny"
T = TypeVar("T")


def run(settings: Settings, body: Callable[[Admission], Awaitable[T]]) -> T:
    async def go() -> T:
        client = aredis.Redis.from_url(settings.redis_url)
        try:
            return await body(Admission(settings, client))
        finally:
            await client.aclose()

    return asyncio.run(go())


@pytest.fixture
def capped(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_queued_jobs": 5})


def test_waiting_counts_shared_and_private_queues_and_reservations(
    capped: Settings, rdb: redis.Redis
) -> None:
    keys = Keys(capped.key_prefix)
    private = keys.private_queue(MODEL, "node", 1)
    rdb.rpush(keys.queue(MODEL), "m1", "m2")
    rdb.rpush(private, "m3")
    # The registry also names in-flight lists: jobs a worker already took are not waiting.
    rdb.rpush(keys.inflight("node:2"), "running-1", "running-2", "running-3")
    rdb.sadd(keys.private_queues(MODEL), private, keys.inflight("node:2"))

    async def body(admission: Admission) -> list[Any]:
        depth = await admission.depth(MODEL)
        held = [await admission.reserve(MODEL, 0), await admission.reserve(MODEL, 0)]
        with pytest.raises(QueueFull):  # 3 messages + 2 reservations = the cap of 5
            await admission.reserve(MODEL, 0)
        await admission.release(MODEL, held[0])
        again = await admission.reserve(MODEL, 0)
        return [depth, again]

    depth, _ = run(capped, body)
    assert depth == 3
    assert rdb.zcard(keys.reservations(MODEL)) == 2


def test_concurrent_reserves_never_pass_the_cap(capped: Settings, rdb: redis.Redis) -> None:
    async def body(admission: Admission) -> list[bool]:
        async def one() -> bool:
            try:
                await admission.reserve(MODEL, 0)
            except QueueFull:
                return False
            return True

        return list(await asyncio.gather(*(one() for _ in range(40))))

    admitted = run(capped, body)
    assert sum(admitted) == 5


def test_a_slot_never_released_lapses(capped: Settings) -> None:
    now = 1_700_000_000_000

    async def body(admission: Admission) -> None:
        for _ in range(5):
            await admission.reserve(MODEL, 0, now_ms=now)
        with pytest.raises(QueueFull):
            await admission.reserve(MODEL, 0, now_ms=now + RESERVATION_MS - 1)
        await admission.reserve(MODEL, 0, now_ms=now + RESERVATION_MS)

    run(capped, body)


def test_a_failed_enqueue_gives_its_slot_back_and_leaves_no_job(
    settings: Settings, rdb: redis.Redis
) -> None:
    fake_warm_worker(rdb, settings)
    keys = Keys(settings.key_prefix)
    dead_broker = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    data = encode(scene(64, 48))

    async def go() -> None:
        client = aredis.Redis.from_url(settings.redis_url)
        service = JobService(settings, client, make_celery(dead_broker))
        try:
            spec = JobSpec.model_validate({"prompts": [{"box": [1, 1, 30, 30]}]})
            with pytest.raises(Unavailable, match="could not queue"):
                await service.submit(spec, service.probe(data), "anon", "key-1", data=data)
        finally:
            service.celery.close()
            await client.aclose()

    asyncio.run(go())
    assert rdb.zcard(keys.reservations(MODEL)) == 0
    assert list(rdb.scan_iter(f"{settings.key_prefix}:job:*")) == []
    assert list(rdb.scan_iter(f"{settings.key_prefix}:idem:*")) == []


def test_a_slot_lapses_thirty_seconds_after_it_was_taken(settings: Settings) -> None:
    one = settings.model_copy(update={"max_queued_jobs": 1})
    taken = 1_700_000_000_000

    async def body(admission: Admission) -> list[str]:
        out = [await admission.reserve(MODEL, 0, now_ms=taken)]
        for now in (taken + 29_999, taken + 30_000):
            try:
                await admission.reserve(MODEL, 0, now_ms=now)
                out.append("admitted")
            except QueueFull:
                out.append("queue_full")
        return out

    assert run(one, body)[1:] == ["queue_full", "admitted"]


@pytest.mark.parametrize("as_bytes", [True, False])
def test_refusals_say_what_is_full_whichever_way_redis_answers(
    settings: Settings, as_bytes: bool
) -> None:
    """Redis answers the script's verdict as bytes, or as text on a decoding client."""
    admission = Admission(settings, aredis.Redis.from_url(settings.redis_url))
    word = (lambda w: w.encode()) if as_bytes else (lambda w: w)
    with pytest.raises(StorageFull) as full:
        admission._raise_if_refused([word("storage_full"), 9 * 2**20, 10 * 2**20], None)
    assert full.value.message == (
        "Redis holds 9.0 MiB of its 10.0 MiB limit (new work stops at 90%); retry once "
        "results and images have expired or been fetched"
    )
    with pytest.raises(QueueFull, match=f"{MODEL} has {settings.max_queued_jobs} jobs waiting"):
        admission._raise_if_refused([word("queue_full"), 3], MODEL)
    admission._raise_if_refused([word("ok"), 0], MODEL)  # admitted: nothing raised


def test_releasing_a_slot_never_raises_when_redis_is_gone(settings: Settings) -> None:
    gone = aredis.Redis(host="127.0.0.1", port=free_port(), retry=None)
    asyncio.run(Admission(settings, gone).release(MODEL, "some-slot"))  # logged, not raised
