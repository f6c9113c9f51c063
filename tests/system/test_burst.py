"""A burst of concurrent submits on two API processes, and a storm of odd methods and
paths: the queue cap holds, and no request mints a metric series.

Real parts throughout: two uvicorn API processes and a Celery worker on one Redis.
The worker is held by a job that sleeps at the model (the fault-injection seam), so
the burst meets a queue that nothing drains while it lasts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from sam2fleet.shared.records import Keys
from tests.conftest import SMALL
from tests.support import Fleet, RedisServer, encode, fleet_env, scene
from tests.system.burst import (
    DepthSampler,
    burst,
    hold_the_worker,
    http_series,
    odd_requests,
    visit_every_label,
    wait_until_ready,
    waiting_messages,
)
from tests.system.client import b64, wait

PREFIX = "burst"
MODEL = "sam2.1_hiera_tiny"
CAP = 10
CLIENTS = 60
HOLD_S = 20  # the blocker's sleep: far longer than the burst takes, even on a loaded machine


@pytest.fixture(scope="module")
def apis(
    redis_server: RedisServer, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Fleet, list[str]]]:
    env = fleet_env(
        redis_server.url,
        tiny_checkpoint,
        PREFIX,
        SMALL,
        SAM2FLEET_MAX_QUEUED_JOBS=str(CAP),
        SAM2FLEET_FAULT_INJECTION="1",
    )
    fleet = Fleet(env, tmp_path_factory.mktemp("burst"))
    fleet.start_worker("w0")
    fleet.start_api()
    second = fleet.start_api("api2")
    try:
        fleet.wait_ready()
        wait_until_ready(second)
        yield fleet, [fleet.base_url, second]
    finally:
        fleet.stop()


def test_queue_cap_holds_under_a_burst_on_two_api_processes(
    apis: tuple[Fleet, list[str]], redis_server: RedisServer
) -> None:
    fleet, urls = apis
    r = redis.Redis.from_url(redis_server.url)
    blocker = hold_the_worker(r, PREFIX, urls[0], HOLD_S)
    body = {"image": b64(encode(scene(120, 90, seed=5))), "prompts": [{"box": [5, 5, 60, 50]}]}
    # Sampling goes on after the burst until 20 samples: the worker is held, so the
    # queue keeps whatever was admitted.
    with DepthSampler(redis_server.url, PREFIX, MODEL).running(min_samples=20) as sampler:
        answers = burst(urls, body, CLIENTS)
    # The worker was busy throughout, so whatever was admitted is still waiting.
    assert httpx.get(f"{urls[0]}/v1/jobs/{blocker}").json()["status"] == "running"
    accepted = [a.json()["id"] for a in answers if a.status_code == 202]
    refused = [a for a in answers if a.status_code != 202]
    assert sampler.samples >= 20, sampler
    assert sampler.deepest <= CAP, f"the queue reached {sampler.deepest} jobs; the cap is {CAP}"
    assert waiting_messages(r, PREFIX, MODEL) == len(accepted) <= CAP
    assert len(accepted) >= CAP // 2, f"only {len(accepted)} admitted: the burst never filled"
    for answer in refused:
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["type"] == "queue_full"
        assert int(answer.headers["retry-after"]) > 0
    assert r.zcard(Keys(PREFIX).reservations(MODEL)) == 0, "an admission slot was left held"
    for job_id in [blocker, *accepted]:
        assert wait(urls[0], job_id, timeout=120)["status"] == "succeeded"
    r.close()


def test_odd_methods_and_paths_add_no_metric_series(apis: tuple[Fleet, list[str]]) -> None:
    url = apis[1][1]
    visit_every_label(url)
    before = http_series(url)
    statuses = odd_requests(url, 300, seed=1)
    assert http_series(url) == before
    assert set(statuses) <= {404, 405}, statuses
    assert statuses.get(405, 0) >= 50 and statuses.get(404, 0) >= 50, statuses
