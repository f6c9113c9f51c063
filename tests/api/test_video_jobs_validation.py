"""Video job submits are validated fully by the gateway before anything is queued:
each mistake gets a clear 4xx; a valid job reaches the readiness check (no worker
here, so 503). Real gateway and Redis, no worker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sam2fleet.shared.settings import Settings
from tests.api.conftest import serve
from tests.oracle import rle
from tests.support import RedisServer
from tests.video_support import encode_video, moving_frames

W, H, N = 96, 64, 8


@pytest.fixture(scope="module")
def api(redis_server: RedisServer) -> Iterator[tuple[httpx.Client, str]]:
    settings = Settings(
        redis_url=redis_server.url,
        key_prefix="vvalid",
        max_objects=3,
        max_points=4,
        max_video_job_bytes=1 << 30,
    )
    with serve(settings) as client:
        r = client.post("/v1/videos", content=encode_video(moving_frames(N, W, H)))
        assert r.status_code == 201, r.text
        yield client, r.json()["video_id"]


def click(obj_id: int = 1, frame: int = 0, x: float = 10, y: float = 10) -> dict[str, Any]:
    return {"obj_id": obj_id, "frame": frame, "points": [[x, y]], "labels": [1]}


def mask(size: list[int], area: tuple[slice, slice] | None = None) -> dict[str, Any]:
    import numpy as np

    m = np.zeros(size, bool)
    if area is not None:
        m[area] = True
    return {"size": size, "counts": rle(m)}


CASES: list[tuple[str, dict[str, Any], int, str, str]] = [
    (
        "frame outside the video",
        {"prompts": [click(frame=N)]},
        422,
        "invalid_prompt",
        "outside the tracked range",
    ),
    (
        "frame outside the range",
        {"prompts": [click(frame=6)], "video": {"end": 5}},
        422,
        "invalid_prompt",
        "outside the tracked range",
    ),
    (
        "range past the end",
        {"prompts": [click()], "video": {"end": N}},
        422,
        "invalid_input",
        "not inside the video",
    ),
    (
        "point outside the frame",
        {"prompts": [click(x=W + 1)]},
        422,
        "invalid_prompt",
        "outside the 96x64",
    ),
    (
        "box outside the frame",
        {"prompts": [{"obj_id": 1, "frame": 0, "box": [0, 0, 10, 70]}]},
        422,
        "invalid_prompt",
        "outside the 96x64",
    ),
    (
        "clashing prompts of one object on one frame",
        {"prompts": [click(), {"obj_id": 1, "frame": 0, "box": [0, 0, 10, 10]}]},
        422,
        "invalid_input",
        "both prompt object 1 on frame 0",
    ),
    (
        "too many objects",
        {"prompts": [click(i) for i in range(4)]},
        422,
        "invalid_prompt",
        "at most 3",
    ),
    (
        "too many points",
        {"prompts": [{"obj_id": 1, "frame": 0, "points": [[1, 1]] * 5, "labels": [1] * 5}]},
        422,
        "invalid_prompt",
        "at most 4",
    ),
    ("negative object id", {"prompts": [click(obj_id=-1)]}, 422, "invalid_input", "obj_id"),
    (
        "mask of the wrong size",
        {"prompts": [{"obj_id": 1, "frame": 0, "mask": mask([H, H])}]},
        422,
        "invalid_prompt",
        "the video is 64x96",
    ),
    (
        "empty mask",
        {"prompts": [{"obj_id": 1, "frame": 0, "mask": mask([H, W])}]},
        422,
        "invalid_prompt",
        "empty",
    ),
    (
        "mask that is not RLE",
        {"prompts": [{"obj_id": 1, "frame": 0, "mask": {"size": [H, W], "counts": "\x01"}}]},
        422,
        "invalid_prompt",
        "not a valid COCO RLE",
    ),
    (
        "mask with points",
        {"prompts": [{**click(), "mask": mask([H, W], (slice(0, 9), slice(0, 9)))}]},
        422,
        "invalid_input",
        "takes no points",
    ),
    (
        "backward from frame 0",
        {"prompts": [click()], "video": {"direction": "backward"}},
        422,
        "invalid_prompt",
        "tracks nothing",
    ),
    ("no prompts", {"prompts": []}, 422, "invalid_input", "prompts"),
    ("unknown field", {"prompts": [click()], "multimask": True}, 422, "invalid_input", "multimask"),
]


@pytest.mark.parametrize(("name", "extra", "status", "error_type", "says"), CASES)
def test_bad_video_jobs_get_a_clear_4xx(
    api: tuple[httpx.Client, str],
    name: str,
    extra: dict[str, Any],
    status: int,
    error_type: str,
    says: str,
) -> None:
    client, video_id = api
    r = client.post("/v1/jobs", json={"mode": "video", "video_id": video_id, **extra})
    assert r.status_code == status, (name, r.text)
    error = r.json()["error"]
    assert error["type"] == error_type, (name, error)
    assert says in error["message"], (name, error)


def test_unknown_video_is_refused(api: tuple[httpx.Client, str]) -> None:
    client, _ = api
    r = client.post("/v1/jobs", json={"mode": "video", "video_id": "f" * 64, "prompts": [click()]})
    assert r.status_code == 422
    assert "unknown or expired" in r.json()["error"]["message"]


def test_a_valid_job_passes_validation(api: tuple[httpx.Client, str]) -> None:
    client, video_id = api
    # Three objects at 96x64 fit in 1 GiB; with no worker the job stops at readiness.
    ok = client.post(
        "/v1/jobs",
        json={"mode": "video", "video_id": video_id, "prompts": [click(i) for i in range(3)]},
    )
    assert ok.status_code == 503 and ok.json()["error"]["type"] == "no_worker_ready"


def test_memory_limit_names_its_setting(redis_server: RedisServer) -> None:
    settings = Settings(redis_url=redis_server.url, key_prefix="vmem", max_video_job_bytes=10**6)
    with serve(settings) as client:
        video_id = client.post("/v1/videos", content=encode_video(moving_frames(2, W, H))).json()[
            "video_id"
        ]
        r = client.post(
            "/v1/jobs", json={"mode": "video", "video_id": video_id, "prompts": [click()]}
        )
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert error["type"] == "video_too_large"
    assert "SAM2FLEET_MAX_VIDEO_JOB_BYTES" in error["message"] and "GiB" in error["message"]
