"""Video jobs survive their worker and Redis: a job whose model process is killed
mid-video is redelivered and finishes with exactly one record per frame; a job
tracking for longer than the visibility timeout is not handed to a second worker;
a Redis restart mid-video loses nothing accepted."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.faults.conftest import FaultFleet, kill, running_fault_fleet
from tests.faults.test_redis import restart
from tests.support import Fleet, RedisServer, fleet_env
from tests.system.client import submit
from tests.system.video_client import VIDEO_ENV, VIDEO_SIZE, frames, upload, wait_end
from tests.video_support import encode_video, moving_frames

ENV = {
    **VIDEO_ENV,
    "SAM2FLEET_PRECISION": "fp32",  # the faster one on CPU; precision is not the point here
    "SAM2FLEET_VISIBILITY_TIMEOUT_S": "20",
    "SAM2FLEET_TASK_SOFT_TIME_LIMIT_S": "10",
    "SAM2FLEET_TASK_TIME_LIMIT_S": "14",
    "SAM2FLEET_MAX_ATTEMPTS": "3",
    "SAM2FLEET_FAULT_INJECTION": "1",
}
CLICK = {"obj_id": 1, "frame": 0, "points": [[40, 50]], "labels": [1]}


@pytest.fixture(scope="module")
def vfaulty(
    redis_server: RedisServer, video_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FaultFleet]:
    env = fleet_env(redis_server.url, video_checkpoint, "vflt", VIDEO_SIZE, **ENV)
    yield from running_fault_fleet(env, tmp_path_factory.mktemp("vfaults"), "vflt")


def start_video(fleet: Fleet, n: int) -> dict[str, Any]:
    video = upload(fleet.base_url, encode_video(moving_frames(n)))
    body = {"mode": "video", "video_id": video["video_id"], "prompts": [CLICK]}
    return submit(fleet.base_url, body)


def wait_frames(fleet: Fleet, job_id: str, done: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (
        httpx.get(f"{fleet.base_url}/v1/jobs/{job_id}")
        .json()
        .get("progress", {})
        .get("frames_done", 0)
        < done
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def assert_every_frame_once(fleet: Fleet, job: dict[str, Any], n: int) -> None:
    assert job["status"] == "succeeded", job
    records = frames(fleet.base_url, job["id"])
    assert [r["frame"] for r in records] == list(range(n))  # no gap, no duplicate
    assert job["progress"] == {"frames_done": n, "frames_total": n}  # counted once each
    assert job["result"]["frames"] == n
    assert job["result"]["objects"][0]["frames_present"] == n


def test_sigkill_mid_video_redelivers_and_every_frame_has_one_record(
    vfaulty: FaultFleet,
) -> None:
    n = 40
    job = start_video(vfaulty, n)
    wait_frames(vfaulty, job["id"], 10)
    kill(vfaulty.model_pid())
    done = wait_end(vfaulty.base_url, job["id"], timeout=180)
    assert done["attempts"] == 2, done
    assert_every_frame_once(vfaulty, done, n)
    # The second run recomputed the first frames: the same masks, written once.
    stored = vfaulty.redis.hlen(f"vflt:frames:{job['id']}")
    assert stored == n


def test_a_video_longer_than_the_visibility_timeout_is_not_redelivered(
    vfaulty: FaultFleet,
) -> None:
    # Past the 20 s visibility timeout (and kombu's 5 s restore sweep): with its
    # delivery renewed, the job keeps its one worker and its one attempt. The fault
    # seam holds each frame 0.25 s, so 120 frames last over 30 s on any machine.
    n = 120
    video = upload(vfaulty.base_url, encode_video(moving_frames(n)))
    vfaulty.redis.set(f"vflt:fault:{video['video_id']}", "frame_sleep:0.25")
    job = submit(
        vfaulty.base_url, {"mode": "video", "video_id": video["video_id"], "prompts": [CLICK]}
    )
    started = time.monotonic()
    # Past the visibility timeout, the message's delivery time is a renewal's, not the
    # delivery's: the lease renews it (every 5 s) under the message's own tag.
    time.sleep(22)
    renewed = [
        vfaulty.redis.zscore("unacked_index", tag)
        for tag, entry in vfaulty.redis.hgetall("unacked").items()
        if job["id"].encode() in entry
    ]
    assert len(renewed) == 1 and time.time() - (renewed[0] or 0) < 10, renewed
    done = wait_end(vfaulty.base_url, job["id"], timeout=300)
    assert time.monotonic() - started > 27, "the job must outlast visibility + restore sweep"
    assert done["attempts"] == 1, done
    assert_every_frame_once(vfaulty, done, n)
    assert int(vfaulty.redis.hget(f"vflt:job:{job['id']}", "terminal_attempts")) == 1


@pytest.fixture
def aof_fleet(video_checkpoint: Path, tmp_path: Path) -> Iterator[tuple[Fleet, RedisServer]]:
    server = RedisServer.start(tmp_path / "redis", appendonly=True)
    (tmp_path / "logs").mkdir()
    fleet = Fleet(
        fleet_env(server.url, video_checkpoint, "vrds", VIDEO_SIZE, **ENV), tmp_path / "logs"
    )
    fleet.start_worker("w0")
    fleet.start_api()
    try:
        fleet.wait_ready()
        yield fleet, server
    finally:
        fleet.stop()
        server.stop()


def test_redis_restart_mid_video_loses_nothing(aof_fleet: tuple[Fleet, RedisServer]) -> None:
    fleet, server = aof_fleet
    n = 40
    job = start_video(fleet, n)
    wait_frames(fleet, job["id"], 8)
    restart(server)
    done = wait_end(fleet.base_url, job["id"], timeout=180)
    assert_every_frame_once(fleet, done, n)
