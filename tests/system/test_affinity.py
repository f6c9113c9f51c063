"""Repeated clicks on one image reach the worker holding its embedding, and skip the
encoder; a dead worker's affinity strands no job."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from tests.conftest import SMALL
from tests.support import Fleet, RedisServer, encode, fleet_env, scene
from tests.system.client import b64, run, submit, wait


@pytest.fixture(scope="module")
def two_workers(
    redis_server: RedisServer, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    fleet = Fleet(
        fleet_env(redis_server.url, tiny_checkpoint, "aff", SMALL),
        tmp_path_factory.mktemp("affinity"),
    )
    fleet.start_worker("w0")
    fleet.start_worker("w1")
    fleet.start_api()
    try:
        fleet.wait_ready()
        r = redis.Redis.from_url(redis_server.url)
        deadline = time.monotonic() + 120
        while len(list(r.scan_iter("aff:worker:*"))) < 2:  # both warm, not just one
            assert time.monotonic() < deadline, fleet.log("w1")
            time.sleep(0.2)
        r.close()
        yield fleet
    finally:
        fleet.stop()


def click(x: int, y: int) -> list[dict]:
    return [{"points": [[x, y]], "labels": [1]}]


def test_repeated_clicks_hit_the_cached_embedding(two_workers: Fleet) -> None:
    image = b64(encode(scene(200, 150, seed=31)))
    first = run(two_workers.base_url, {"image": image, "prompts": click(50, 40)})
    assert first["result"]["timings"]["embedding_cache_hit"] is False
    image_id = first["image_id"]
    later = [
        run(two_workers.base_url, {"image_id": image_id, "prompts": click(50 + i, 40)})
        for i in range(1, 7)
    ]
    # With two workers and no affinity about half of these would land on the other one.
    assert [j["result"]["timings"]["embedding_cache_hit"] for j in later] == [True] * 6
    assert all(j["result"]["timings"]["embed_s"] == 0.0 for j in later)
    same = run(two_workers.base_url, {"image_id": image_id, "prompts": click(50, 40)})
    assert same["result"]["timings"]["embedding_cache_hit"] is True
    assert same["result"]["masks"] == first["result"]["masks"]  # the cache changes nothing


def test_a_dead_workers_affinity_strands_no_job(two_workers: Fleet) -> None:
    r = redis.Redis.from_url(two_workers.env["SAM2FLEET_REDIS_URL"])
    image = b64(encode(scene(180, 120, seed=32)))
    first = run(two_workers.base_url, {"image": image, "prompts": click(30, 30)})
    queue = r.get(f"aff:affinity:sam2.1_hiera_tiny:anon:{first['image_id']}").decode()
    holder = next(name for name in ("w0", "w1") if f".w.{name}@" in queue)
    supervisor = psutil.Process(two_workers.procs[holder].pid)
    family = [supervisor, *supervisor.children(recursive=True)]
    for p in family:
        p.kill()
    psutil.wait_procs(family, timeout=10)
    # Its heartbeat lingers a few seconds, so this job may be routed to the dead
    # worker's queue; the surviving worker moves it back to the shared queue.
    job = submit(two_workers.base_url, {"image_id": first["image_id"], "prompts": click(31, 30)})
    done = wait(two_workers.base_url, job["id"], timeout=60)
    assert done["status"] == "succeeded"
    assert done["result"]["timings"]["embedding_cache_hit"] is False  # the other worker
    assert r.llen(queue) == 0
    r.close()
