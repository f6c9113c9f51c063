"""The job record and the worker heartbeat as Redis holds them and as clients see them:
round trips, the defaults of fields a hash lacks, and the public shape."""

from __future__ import annotations

import json
import time

import pytest

from sam2fleet.shared.records import Heartbeat, JobRecord, Keys
from sam2fleet.shared.schemas import ErrorBody, JobSpec, JobStatus

SPEC = JobSpec(mode="auto")


def _record(**changes: object) -> JobRecord:
    base = JobRecord.new("j1", SPEC, "sam2.1_hiera_tiny", "img1", "alice")
    return base if not changes else JobRecord(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def _bytes(fields: dict[str, str]) -> dict[bytes, bytes]:
    return {k.encode(): v.encode() for k, v in fields.items()}


def test_a_new_record_round_trips_with_zero_counts_and_no_optional_fields() -> None:
    record = _record()
    stored = record.to_redis()
    assert stored["attempts"] == "0" and stored["status"] == "queued"
    assert not {"started_at", "finished_at", "error", "frames_total", "frames_done"} & set(stored)
    back = JobRecord.from_redis(_bytes(stored))
    assert back == record
    assert (back.attempts, back.terminal_attempts, back.fenced_writes) == (0, 0, 0)
    assert (back.frames_done, back.frames_total, back.holder) == (None, None, "")
    assert JobRecord.from_redis({}) is None
    # A hash without the counters (written before they existed) reads them as zero.
    bare = {k: v for k, v in stored.items() if k != "attempts"}
    assert JobRecord.from_redis(bare) == record


def test_counts_and_times_a_worker_wrote_are_read_back() -> None:
    stored = _record().to_redis() | {
        "attempts": "2",
        "terminal_attempts": "3",
        "fenced_writes": "1",
        "holder": "host:12",
        "started_at": "10.5",
        "finished_at": "12.25",
    }
    back = JobRecord.from_redis(stored)
    assert back is not None
    assert (back.attempts, back.terminal_attempts, back.fenced_writes) == (2, 3, 1)
    assert (back.holder, back.started_at, back.finished_at) == ("host:12", 10.5, 12.25)


def test_a_video_record_keeps_its_progress_from_zero() -> None:
    video = _record(mode="video", frames_total=40)
    stored = video.to_redis()
    assert (stored["frames_total"], stored["frames_done"]) == ("40", "0")
    public = video.public()
    assert public["video_id"] == "img1" and "image_id" not in public
    assert public["progress"] == {"frames_done": 0, "frames_total": 40}
    later = _record(mode="video", frames_total=40, frames_done=7)
    assert JobRecord.from_redis(later.to_redis()) == later
    assert later.public()["progress"] == {"frames_done": 7, "frames_total": 40}
    assert "progress" not in _record(mode="video").public()  # not planned yet


def test_the_public_shape_has_the_result_once_succeeded_and_the_error_once_failed() -> None:
    result = json.dumps({"masks": []})
    queued = _record().public(result)
    assert queued["image_id"] == "img1" and "video_id" not in queued
    assert "result" not in queued and "error" not in queued
    assert _record(status=JobStatus.succeeded).public(result)["result"] == {"masks": []}
    assert "result" not in _record(status=JobStatus.succeeded).public()
    error = ErrorBody(type="timeout", message="too long")
    failed = _record(status=JobStatus.failed, error=error)
    assert failed.public(result)["error"] == {"type": "timeout", "message": "too long"}
    assert "result" not in failed.public(result)
    assert JobRecord.from_redis(failed.to_redis()) == failed


def _beat(**changes: object) -> Heartbeat:
    fields: dict[str, object] = {
        "model": "sam2.1_hiera_tiny",
        "device": "cpu",
        "weights": "random",
        "warm": True,
        "pid": 12,
        "queue": "q",
        "inflight": "i",
        "ts": 100.0,
    }
    return Heartbeat(**(fields | changes))  # type: ignore[arg-type]


@pytest.mark.parametrize("warm", [True, False])
def test_a_heartbeat_round_trips(warm: bool) -> None:
    beat = _beat(warm=warm, parent_pid=7, cuda_cache_clears=3, cuda_cache_bytes_released=9)
    stored = beat.to_redis()
    assert stored["warm"] == ("1" if warm else "0")
    assert Heartbeat.from_redis(_bytes(stored)) == beat


def test_a_heartbeat_states_zero_for_counters_not_given() -> None:
    stored = _beat().to_redis()
    assert [
        stored[k] for k in ("parent_pid", "cuda_cache_clears", "cuda_cache_bytes_released")
    ] == [
        "0",
        "0",
        "0",
    ]


def test_a_heartbeat_from_an_older_worker_reads_zero_for_what_it_lacks() -> None:
    stored = {"model": "m", "ts": "5.0", "warm": "1"}
    beat = Heartbeat.from_redis(stored)
    assert beat is not None and beat.warm
    assert (beat.pid, beat.parent_pid, beat.cuda_cache_clears, beat.cuda_cache_bytes_released) == (
        0,
        0,
        0,
        0,
    )
    assert Heartbeat.from_redis({"ts": "5.0"}) is None  # half-written: no model
    assert Heartbeat.from_redis({"model": "m", "ts": "soon"}) is None  # foreign


def test_a_heartbeats_age_is_seconds_since_it_was_written() -> None:
    beat = _beat(ts=100.0)
    assert beat.age(130.5) == 30.5
    assert 0 <= _beat(ts=time.time()).age() < 5


def test_a_workers_name_is_what_follows_the_prefix_even_when_the_prefix_repeats_it() -> None:
    keys = Keys("fleet:worker:eu")
    assert keys.worker_name(keys.worker("host:12")) == "host:12"
