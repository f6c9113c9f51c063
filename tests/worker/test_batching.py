"""Cross-job batching in one process: the batched encoder pass against one image at
a time, and taking jobs out of real Redis queues without ever losing one."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import redis
import torch

from sam2fleet.shared.queue import SEGMENT_TASK
from sam2fleet.shared.records import Heartbeat, Keys
from sam2fleet.shared.schemas import Prompt
from sam2fleet.shared.settings import Settings
from sam2fleet.worker.batching import Gatherer
from sam2fleet.worker.model import SegmentationModel
from sam2fleet.worker.runtime import Runtime
from sam2fleet.worker.store import JobStore
from tests import oracle
from tests.conftest import SMALL
from tests.support import RedisServer, scene


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path) -> SegmentationModel:
    return SegmentationModel(
        Settings(checkpoint=tiny_checkpoint, model_image_size=SMALL, device="cpu")
    )


def test_a_batched_encoder_pass_gives_each_image_its_own_embedding(
    model: SegmentationModel,
) -> None:
    # Different sizes and aspect ratios in one batch: each is resized on its own.
    images = [scene(160, 120, seed=1), scene(96, 200, seed=2), scene(300, 90, seed=3)]
    prompts = [Prompt(points=[[40.0, 30.0]], labels=[1]), Prompt(box=[5, 5, 80, 60])]
    batched = model.embed_batch(images)
    assert len(batched) == 3
    # The batched pass runs the encoder's products on more rows than one image's,
    # which some CPUs round differently in the last bit (docs/performance.md): equal
    # up to float32 rounding (another image's features would be far off), and how
    # much is bit-identical is counted and printed (`pytest -s`).
    features = same_features = masks = same_masks = 0
    for image, embedding in zip(images, batched, strict=True):
        model.embed(image)
        alone = model.predictor._features
        assert embedding.orig_hw == [image.shape[:2]]
        pairs = [(alone["image_embed"], embedding.features["image_embed"])]
        pairs += zip(alone["high_res_feats"], embedding.features["high_res_feats"], strict=True)
        for a, b in pairs:
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
            features, same_features = features + 1, same_features + torch.equal(a, b)
        expected = model.predict(prompts, multimask=True)
        assert model.use(embedding) == image.shape[:2]
        got = model.predict(prompts, multimask=True)
        for e, g in zip(expected, got, strict=True):
            assert np.allclose(g.scores, e.scores, atol=oracle.PREDICTED_IOU_TOLERANCE, rtol=0)
            for want, have in zip(e.masks, g.masks, strict=True):
                assert oracle.mask_iou(want, have) >= oracle.MIN_MASK_IOU
                masks, same_masks = masks + 1, same_masks + bool((want == have).all())
        # Its own storage, not a view into the batch: the cache counts true bytes.
        assert embedding.features["image_embed"].untyped_storage().nbytes() == (
            embedding.features["image_embed"].numel() * 4
        )
    print(
        f"bit-identical to one image at a time: {same_features} of {features} feature maps, "
        f"{same_masks} of {masks} masks"
    )


# --- taking jobs out of the queues ------------------------------------------------


@pytest.fixture
def store(redis_server: RedisServer, prefix: str) -> JobStore:
    return JobStore(redis.Redis.from_url(redis_server.url), Keys(prefix))


def _job(store: JobStore, job_id: str, mode: str = "prompt", status: str = "queued") -> None:
    store.redis.hset(
        store.keys.job(job_id),
        mapping={
            "id": job_id,
            "status": status,
            "mode": mode,
            "model": "sam2.1_hiera_tiny",
            "image_id": "img",
            "owner": "anon",
            "created_at": time.time(),
            "spec": "{}",
        },
    )


def _message(job_id: str, task: str = SEGMENT_TASK) -> bytes:
    # The shape kombu's Redis transport stores: headers name the task and its id.
    body = {"body": "W10=", "headers": {"task": task, "id": job_id}, "properties": {}}
    return json.dumps(body).encode()


def _enqueue(store: JobStore, queue: str, *job_ids: str) -> None:
    for job_id in job_ids:  # kombu LPUSHes; consumers pop from the right (oldest)
        store.redis.lpush(queue, _message(job_id))


def _gatherer(store: JobStore, max_size: int = 8, wait_s: float = 0.0) -> Gatherer:
    p = store.keys.prefix
    return Gatherer(
        store,
        queues=[f"{p}.m.w.me", f"{p}.m"],
        shared_queue=f"{p}.m",
        inflight=store.keys.inflight("me"),
        max_size=max_size,
        wait_s=wait_s,
    )


def _ids(store: JobStore, key: str) -> list[str]:
    return [json.loads(m)["headers"]["id"] for m in store.redis.lrange(key, 0, -1)]


def test_takes_own_queue_first_then_the_oldest_shared_jobs_and_starts_them(
    store: JobStore,
) -> None:
    g = _gatherer(store, max_size=4)
    for job_id in "abcde":
        _job(store, job_id)
    _enqueue(store, f"{store.keys.prefix}.m", "a", "b", "c")
    _enqueue(store, f"{store.keys.prefix}.m.w.me", "d")
    taken = g.take(room=7)  # bounded by max_size - 1 = 3
    assert [t.job_id for t in taken] == ["d", "a", "b"]
    assert _ids(store, f"{store.keys.prefix}.m") == ["c"]
    assert sorted(_ids(store, g.inflight)) == ["a", "b", "d"]
    for t in taken:
        assert store.status(t.job_id) == "running" and t.record.attempts == 1
    g.done(taken[0].message)
    g.give_back(taken[1].message)
    assert sorted(_ids(store, g.inflight)) == ["b"]
    # Given back to the head: the next job Celery delivers, before the older "c".
    assert store.redis.rpop(f"{store.keys.prefix}.m") == taken[1].message


def test_stops_at_a_job_it_may_not_batch_and_leaves_it_first_in_line(store: JobStore) -> None:
    g = _gatherer(store)
    _job(store, "p1")
    _job(store, "auto1", mode="auto")
    _job(store, "p2")
    queue = f"{store.keys.prefix}.m"
    _enqueue(store, queue, "p1", "auto1", "p2")
    store.redis.lpush(queue, _message("x", task="some.other.task"))
    assert [t.job_id for t in g.take(room=7)] == ["p1"]
    assert _ids(store, queue) == ["x", "p2", "auto1"]  # auto1 still next, untouched
    assert store.status("auto1") == "queued"
    store.redis.delete(queue)
    store.redis.lpush(queue, b"not json at all")
    assert g.take(room=7) == []
    assert store.redis.lrange(queue, 0, -1) == [b"not json at all"]
    assert store.redis.llen(g.inflight) == 1  # only p1, still held


def test_drops_cancelled_and_expired_jobs_without_running_them(store: JobStore) -> None:
    g = _gatherer(store)
    _job(store, "gone-by-cancel", status="cancelled")
    _job(store, "ok")
    _enqueue(store, f"{store.keys.prefix}.m", "gone-by-cancel", "expired", "ok")
    assert [t.job_id for t in g.take(room=7)] == ["ok"]
    assert store.status("gone-by-cancel") == "cancelled"
    assert _ids(store, g.inflight) == ["ok"]


def test_waits_up_to_the_batch_wait_for_jobs_to_arrive(store: JobStore) -> None:
    g = _gatherer(store, wait_s=1.0)
    _job(store, "late")
    timer = threading.Timer(0.2, _enqueue, args=(store, f"{store.keys.prefix}.m", "late"))
    timer.start()
    started = time.monotonic()
    taken = g.take(room=1)
    timer.join()
    assert [t.job_id for t in taken] == ["late"]
    assert 0.15 < time.monotonic() - started < 1.0
    assert _gatherer(store, wait_s=0.0).take(room=1) == []  # no wait: nothing queued


def test_a_dead_workers_inflight_jobs_go_back_to_the_shared_queue(store: JobStore) -> None:
    model_name = "sam2.1_hiera_tiny"
    settings = Settings(key_prefix=store.keys.prefix, model=model_name)
    shared = Keys(settings.key_prefix).queue(model_name)
    dead = Gatherer(
        store,
        queues=[shared],
        shared_queue=shared,
        inflight=store.keys.inflight("dead:1"),
        max_size=8,
        wait_s=0,
    )
    for job_id in ("j1", "j2"):
        _job(store, job_id)
    _enqueue(store, shared, "j1", "j2")
    store.redis.sadd(store.keys.private_queues(model_name), dead.inflight)
    assert len(dead.take(room=7)) == 2 and store.redis.llen(shared) == 0
    # A live worker's sweep: the dead one has no heartbeat, so its list is emptied.
    live = Runtime(
        settings=settings,
        model=_Named(model_name),  # type: ignore[arg-type]
        store=store,
        clearer=None,  # type: ignore[arg-type]
        name="live:2",
        stop_event=threading.Event(),
        queue=f"{shared}.w.live",
    )
    live.beat = lambda: None  # type: ignore[method-assign]
    beat = Heartbeat(model_name, "cpu", "random", True, 2, live.queue, live.inflight)
    store.heartbeat(live.name, beat, 30)
    assert live.rescue_orphaned_queues() == 2
    assert sorted(_ids(store, shared)) == ["j1", "j2"]
    assert store.redis.llen(dead.inflight) == 0
    assert not store.redis.sismember(store.keys.private_queues(model_name), dead.inflight)
    assert store.redis.sismember(store.keys.private_queues(model_name), live.inflight)


class _Named:
    """Test double for the model seam: only the name the sweep needs."""

    def __init__(self, name: str) -> None:
        self.stamp = type("Stamp", (), {"name": name})()


def test_batching_defaults_on_for_cuda_and_off_for_cpu() -> None:
    assert Settings().batch_size_for("cuda") == 8
    assert Settings().batch_size_for("cpu") == 1  # measured slower per image on CPU
    assert Settings(batch_max_size=3).batch_size_for("cpu") == 3
    assert Settings(batch_max_size=1).batch_size_for("cuda") == 1
