"""A refused request stores nothing, and a Redis near its `maxmemory` refuses new work
with 503 `storage_full` before any write fails. Against a real redis-server started
with a small maxmemory and `noeviction`, as `sam2fleet up` starts it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from sam2fleet.shared.settings import Settings
from tests.api.conftest import serve
from tests.api.test_access_and_overload import fake_warm_worker
from tests.support import RedisServer, encode

MAXMEMORY = 8 * 1024 * 1024
BOX = [{"box": [1, 1, 30, 30]}]


@pytest.fixture(scope="module")
def small_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer.start(tmp_path_factory.mktemp("small-redis"), maxmemory=MAXMEMORY)
    yield server
    server.stop()


@pytest.fixture
def small(small_redis: RedisServer, settings: Settings) -> Iterator[tuple[Settings, redis.Redis]]:
    r = redis.Redis.from_url(small_redis.url)
    r.flushall()
    yield settings.model_copy(update={"redis_url": small_redis.url, "max_queued_jobs": 2}), r
    r.close()


def noise_png(seed: int, side: int = 200) -> bytes:
    """An image that does not compress: about 3 bytes per pixel stored."""
    rng = np.random.default_rng(seed)
    return encode(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def all_keys(r: redis.Redis) -> set[bytes]:
    return set(r.keys("*"))


def test_refused_requests_leave_no_key_behind(small: tuple[Settings, redis.Redis]) -> None:
    settings, r = small
    fake_warm_worker(r, settings)
    image = noise_png(1, 64)
    with serve(settings) as api:
        # Two accepted jobs fill the queue (no worker runs them); each stored its image.
        for seed in (2, 3):
            ok = api.post("/v1/jobs", json={"image": b64(noise_png(seed, 64)), "prompts": BOX})
            assert ok.status_code == 202, ok.text
        before = all_keys(r)
        refusals: list[tuple[Callable[[], httpx.Response], int, str]] = [
            (
                lambda: api.post(
                    "/v1/jobs",
                    json={"image": b64(image), "prompts": [{"box": [0, 0, 500, 10]}]},
                ),
                422,
                "invalid_prompt",
            ),
            (
                lambda: api.post(
                    "/v1/jobs", json={"image": b64(image), "prompts": BOX, "model": "sam3"}
                ),
                422,
                "invalid_input",
            ),
            (
                lambda: api.post(
                    "/v1/jobs",
                    json={"image": b64(image), "prompts": BOX, "model": "sam2.1_hiera_large"},
                ),
                503,
                "no_worker_ready",
            ),
            (
                lambda: api.post("/v1/jobs", json={"image": b64(image), "prompts": BOX}),
                503,
                "queue_full",
            ),
            (
                lambda: api.post(
                    "/v1/jobs",
                    json={"image": b64(image), "prompts": BOX},
                    headers={"Idempotency-Key": "retry-me"},
                ),
                503,
                "queue_full",
            ),
            (
                lambda: api.post(
                    "/v1/jobs",
                    files={"image": ("a.png", image, "image/png")},
                    data={"job": '{"prompts": [{"box": [0, 0, 999, 9]}]}'},
                ),
                422,
                "invalid_prompt",
            ),
            (
                lambda: api.post(
                    "/segment",
                    json={
                        "image_base64": b64(image),
                        "prompt_type": "box",
                        "boxes": [[1, 1, 9, 9]],
                    },
                ),
                503,
                "queue_full",
            ),
            (
                lambda: api.post("/v1/images", content=b"GIF89a not really", headers={}),
                415,
                "unsupported_image",
            ),
        ]
        for call, status, error_type in refusals:
            answer = call()
            assert answer.status_code == status, answer.text
            assert answer.json()["error"]["type"] == error_type
            assert all_keys(r) == before, f"{error_type} left a key behind"


def test_uploads_and_jobs_stop_with_storage_full_before_redis_is_full(
    small: tuple[Settings, redis.Redis],
) -> None:
    settings, r = small
    fake_warm_worker(r, settings)
    with serve(settings.model_copy(update={"redis_memory_high_water": 0.8})) as api:
        answers = []
        for seed in range(200):
            answer = api.post(
                "/v1/images", content=noise_png(100 + seed), headers={"content-type": "image/png"}
            )
            answers.append(answer)
            if answer.status_code != 201:
                break
        full = answers[-1]
        # Accepted while there was room; then one clear refusal, never a failed write.
        assert [a.status_code for a in answers[:-1]] == [201] * (len(answers) - 1)
        assert len(answers) > 10, "Redis was full before the first upload"
        assert full.status_code == 503, full.text
        assert full.json()["error"]["type"] == "storage_full"
        assert int(full.headers["retry-after"]) > 0
        info = r.info("memory")
        assert info["used_memory"] < info["maxmemory"] == MAXMEMORY
        before = all_keys(r)
        job = api.post("/v1/jobs", json={"image": b64(noise_png(999)), "prompts": BOX})
        assert job.status_code == 503 and job.json()["error"]["type"] == "storage_full"
        assert all_keys(r) == before
        # Room comes back as images expire (here: removed); uploads are taken again.
        for key in list(r.scan_iter(f"{settings.key_prefix}:image:*"))[: len(answers) // 2]:
            r.delete(key)
        again = api.post(
            "/v1/images", content=noise_png(5000), headers={"content-type": "image/png"}
        )
        assert again.status_code == 201, again.text


def test_sam2fleet_up_starts_redis_with_a_memory_cap(tmp_path: Path) -> None:
    from sam2fleet.launcher.redis_server import ensure_redis, free_port

    handle = ensure_redis(f"redis://127.0.0.1:{free_port()}/0", tmp_path, maxmemory=MAXMEMORY)
    try:
        r = redis.Redis.from_url(handle.url)
        assert r.config_get("maxmemory") == {"maxmemory": str(MAXMEMORY)}
        assert r.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        r.close()
    finally:
        handle.stop()
