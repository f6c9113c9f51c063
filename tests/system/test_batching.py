"""Cross-job batching through the real fleet: jobs that wait while the worker is busy
are encoded in one forward pass, and each still gets Meta's masks (up to the rounding
of a batched pass, see tests/oracle.py)."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from sam2fleet.shared.images import image_id_for
from tests import oracle
from tests.conftest import SMALL, fleet_fixture
from tests.support import Fleet, RedisServer, encode, scene
from tests.system.client import b64, submit, wait
from tests.system.test_oracle import fleet_masks

PREFIX = "batch"


batching_fleet = fleet_fixture(
    PREFIX,
    SAM2FLEET_FAULT_INJECTION="1",  # to hold the worker busy while jobs queue
    SAM2FLEET_BATCH_MAX_SIZE="4",
)


def test_waiting_prompt_jobs_share_one_encoder_pass_and_match_meta(
    batching_fleet: Fleet, redis_server: RedisServer, tiny_checkpoint: Path
) -> None:
    r = redis.Redis.from_url(redis_server.url)
    base = batching_fleet.base_url
    busy = encode(scene(120, 90, seed=500))
    r.set(f"{PREFIX}:fault:{image_id_for(busy)}", "sleep:2")
    holder = submit(base, {"image": b64(busy), "prompts": [{"points": [[60, 45]], "labels": [1]}]})
    images = [scene(160 + 16 * i, 120, seed=510 + i) for i in range(5)]
    prompts = [{"points": [[50, 40]], "labels": [1]}, {"box": [10, 10, 120, 100]}]
    deadline = time.monotonic() + 30
    while r.hget(f"{PREFIX}:job:{holder['id']}", "status") != b"running":
        assert time.monotonic() < deadline, "the holding job never started"
        time.sleep(0.02)
    jobs = [submit(base, {"image": b64(encode(img)), "prompts": prompts}) for img in images]
    # A second job on the first image: in the same batch, it shares that embedding.
    again = submit(base, {"image": b64(encode(images[0])), "prompts": prompts[:1]})

    assert wait(base, holder["id"])["result"]["timings"]["encoder_batch_size"] == 1
    done = [wait(base, j["id"]) for j in jobs]
    second = wait(base, again["id"])
    assert all(j["status"] == "succeeded" and j["attempts"] == 1 for j in [*done, second])
    # Batch size 4: the first task takes three more (four distinct images, one pass);
    # the fifth image and the repeat of the first come in the next task.
    sizes = [j["result"]["timings"]["encoder_batch_size"] for j in done]
    assert sizes[:4] == [4, 4, 4, 4], sizes
    assert len({j["result"]["timings"]["embed_s"] for j in done[:4]}) == 1  # one pass
    assert second["result"]["timings"]["embedding_cache_hit"] is True  # cached by the batch
    # Meta's masks up to the rounding a batched encoder pass may change on some CPUs
    # (tests/oracle.py); how many are bit-identical is printed (`pytest -s`).
    checks = [(img, job, prompts) for img, job in zip(images, done, strict=True)]
    checks.append((images[0], second, prompts[:1]))
    differing = sum(
        oracle.assert_close_prompt_masks(
            fleet_masks(job, len(ps)),
            oracle.predict(tiny_checkpoint, SMALL, img, ps, True),
            img.shape[:2],
        )
        for img, job, ps in checks
    )
    print(f"{differing} of {3 * (2 * len(images) + 1)} masks not bit-identical to Meta's")
    assert "batched with 3 more prompt job(s)" in batching_fleet.log("w0")
    assert r.llen(f"{PREFIX}:inflight:" + _worker_name(r)) == 0  # every message released
    r.close()


def _worker_name(r: redis.Redis) -> str:
    (key,) = list(r.scan_iter(f"{PREFIX}:worker:*"))
    return key.decode().split(":worker:", 1)[1]
