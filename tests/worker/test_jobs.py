"""The job runner in one process, on real Redis and the real SAM 2 architecture: what
it writes, what it tells its observer, and the device-failure policy it applies."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import torch

from sam2fleet.shared.errors import InputTooLarge
from sam2fleet.shared.records import JobRecord, Keys
from sam2fleet.shared.schemas import AutoParams, ErrorBody, JobSpec, JobStatus, Prompt
from sam2fleet.shared.settings import Settings
from sam2fleet.worker import failures
from sam2fleet.worker.jobs import JobRunner
from sam2fleet.worker.model import SegmentationModel
from sam2fleet.worker.store import JobStore
from tests.conftest import SMALL
from tests.support import RedisServer, encode, scene


class RecordingObserver:
    """Test double for the observer seam (the metrics in a worker): records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def started(self, record: JobRecord) -> None:
        self.calls.append(("started", record.id))

    def not_started(self, job_id: str) -> None:
        self.calls.append(("not_started", job_id))

    def succeeded(self, job_id: str, result: dict[str, Any], written: bool) -> None:
        self.calls.append(("succeeded", job_id, written))

    def failed(self, job_id: str, error: ErrorBody, written: bool) -> None:
        self.calls.append(("failed", job_id, error.type, written))

    def ended(self, job_id: str, outcome: str) -> None:
        self.calls.append(("ended", job_id, outcome))

    def heartbeat(self) -> None:
        self.calls.append(("heartbeat",))


@pytest.fixture(scope="module")
def settings(tiny_checkpoint: Path) -> Settings:
    return Settings(checkpoint=tiny_checkpoint, model_image_size=SMALL, device="cpu")


@pytest.fixture(scope="module")
def model(settings: Settings) -> SegmentationModel:
    return SegmentationModel(settings)


@pytest.fixture
def runner(
    settings: Settings, model: SegmentationModel, redis_server: RedisServer, prefix: str
) -> JobRunner:
    store = JobStore(redis.Redis.from_url(redis_server.url), Keys(prefix))
    return JobRunner(settings, model, store, RecordingObserver(), worker="test:1")


def _submit(runner: JobRunner, spec: JobSpec) -> str:
    """What the gateway leaves in Redis for a job: the image and the queued record."""
    job_id, owner, image_id = uuid.uuid4().hex, "anon", uuid.uuid4().hex
    data = encode(scene(96, 72, seed=3))
    keys, r = runner.store.keys, runner.store.redis
    r.hset(keys.image(owner, image_id), mapping={"data": data, "width": 96, "height": 72})
    record = JobRecord.new(job_id, spec, runner.model.stamp.name, image_id, owner)
    r.hset(keys.job(job_id), mapping=record.to_redis())
    return job_id


PROMPT = JobSpec(prompts=[Prompt(box=[5, 5, 60, 50])])


def _started(runner: JobRunner) -> tuple[RecordingObserver, str, JobRecord]:
    observer = runner.observer
    assert isinstance(observer, RecordingObserver)
    job_id = _submit(runner, PROMPT)
    record = runner.start(job_id)
    assert record is not None and record.status == JobStatus.running
    return observer, job_id, record


def test_a_job_is_observed_at_its_start_and_its_one_terminal_write(runner: JobRunner) -> None:
    observer, job_id, record = _started(runner)
    assert runner.settle(job_id, record) == "succeeded"
    runner.end(job_id, "succeeded")
    assert runner.store.status(job_id) == JobStatus.succeeded
    # Run again (a redelivery that got past the start): the write is refused, and the
    # observer hears so.
    assert runner.settle(job_id, record) == "succeeded"
    assert observer.calls == [
        ("started", job_id),
        ("succeeded", job_id, True),
        ("ended", job_id, "succeeded"),
        ("succeeded", job_id, False),
    ]
    assert runner.start(job_id) is None  # finished: not started again
    assert observer.calls[-1] == ("not_started", job_id)


def test_a_cancelled_job_stops_without_a_terminal_write(runner: JobRunner) -> None:
    observer, job_id, record = _started(runner)
    runner.store.redis.hset(runner.store.keys.job(job_id), "status", "cancelled")
    assert runner.settle(job_id, record) == "cancelled"
    assert observer.calls == [("started", job_id)]
    assert runner.store.record(job_id).terminal_attempts == 0  # type: ignore[union-attr]


def test_a_bad_job_fails_with_its_error_type(runner: JobRunner) -> None:
    observer, job_id, record = _started(runner)
    runner.store.redis.delete(runner.store.keys.image(record.owner, record.image_id))
    assert runner.settle(job_id, record) == "failed"
    assert observer.calls[-1] == ("failed", job_id, "invalid_image", True)
    stored = runner.store.record(job_id)
    assert stored is not None and stored.error is not None
    assert stored.error.type == "invalid_image"


def test_out_of_memory_halves_the_points_per_batch_down_to_the_floor() -> None:
    spec = JobSpec(mode="auto", auto=AutoParams(points_per_batch=32))
    lower = failures.with_less_work(spec, floor=8)
    assert lower.auto.points_per_batch == 16
    assert failures.with_less_work(lower, floor=8).auto.points_per_batch == 8
    with pytest.raises(InputTooLarge):
        failures.with_less_work(failures.with_less_work(lower, floor=8), floor=8)
    with pytest.raises(InputTooLarge):  # a prompt job has nothing to lower
        failures.with_less_work(PROMPT, floor=8)


def test_only_cuda_errors_other_than_out_of_memory_end_the_process() -> None:
    assert failures.is_cuda_error(torch.AcceleratorError("CUDA error: illegal memory access"))
    assert failures.is_cuda_error(RuntimeError("CUDA error: device-side assert triggered"))
    assert not failures.is_cuda_error(torch.OutOfMemoryError("CUDA out of memory."))
    assert not failures.is_cuda_error(ValueError("bad prompt"))
