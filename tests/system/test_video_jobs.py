"""Video jobs through a whole fleet: frame pages and the NDJSON stream, frame ranges,
strides and directions, the final summary, cancellation within a frame, and clicks
answered while a long video is tracked."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from tests.support import Fleet, encode, scene
from tests.system.client import b64, run, submit
from tests.system.video_client import frames, track, upload, video_fleet_fixture, wait_end
from tests.video_support import encode_video, moving_frames

# fp32 here (the oracle tests run bf16): both precisions go through the fleet.
video_fleet = video_fleet_fixture("vjobs", SAM2FLEET_PRECISION="fp32")

CLICK = {"obj_id": 1, "points": [[40, 50]], "labels": [1]}


def progress(fleet: Fleet, job_id: str) -> dict[str, Any]:
    return httpx.get(f"{fleet.base_url}/v1/jobs/{job_id}").json()


def wait_frames(fleet: Fleet, job_id: str, done: int, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = progress(fleet, job_id)
        if (
            job.get("progress", {}).get("frames_done", 0) >= done
            or job["status"] != "running"
            and job["status"] != "queued"
        ):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def test_range_stride_both_directions_pages_stream_and_summary(video_fleet: Fleet) -> None:
    video = upload(video_fleet.base_url, encode_video(moving_frames(12)))
    job, records = track(
        video_fleet.base_url,
        video["video_id"],
        [{**CLICK, "frame": 6}],
        start=1,
        end=10,
        direction="both",
        stride=2,
    )
    # Forward 6..10 then backward 6..1 (SAM 2's order), every 2nd frame from frame 1.
    order = [7, 9, 5, 3, 1]
    assert [r["frame"] for r in records] == sorted(order)
    assert job["progress"] == {"frames_done": 5, "frames_total": 5}
    assert job["video_id"] == video["video_id"] and "image_id" not in job
    result = job["result"]
    assert result["frames"] == 5 and result["model"]["precision"] == "fp32"
    assert result["video"] == video
    for r in records:
        (obj,) = r["objects"]
        assert obj["obj_id"] == 1 and obj["area"] > 0 and obj["object_score"] > 0
        assert obj["segmentation"]["size"] == [120, 160] and len(obj["bbox"]) == 4
    assert result["objects"] == [
        {"obj_id": 1, "frames_present": 5, "first_frame": 1, "last_frame": 9}
    ]
    # Pages of two: frame order, `next_start` pages on, null at the end.
    base = f"{video_fleet.base_url}/v1/jobs/{job['id']}/frames"
    page = httpx.get(base, params={"start": 0, "limit": 2}).json()
    assert [r["frame"] for r in page["frames"]] == [1, 3] and page["next_start"] == 5
    page = httpx.get(base, params={"start": 5, "limit": 10}).json()
    assert [r["frame"] for r in page["frames"]] == [5, 7, 9] and page["next_start"] is None
    # The stream: tracking order, resumable.
    lines = httpx.get(f"{base}/stream").text.splitlines()
    assert [json.loads(line)["frame"] for line in lines] == order
    assert json.loads(lines[0]) == next(r for r in records if r["frame"] == 7)
    lines = httpx.get(f"{base}/stream", params={"skip": 3}).text.splitlines()
    assert [json.loads(line)["frame"] for line in lines] == [3, 1]


def test_stream_sends_frames_as_they_are_written(video_fleet: Fleet) -> None:
    video = upload(video_fleet.base_url, encode_video(moving_frames(20)))
    job = submit(
        video_fleet.base_url,
        {"mode": "video", "video_id": video["video_id"], "prompts": [{**CLICK, "frame": 0}]},
    )
    seen = []
    url = f"{video_fleet.base_url}/v1/jobs/{job['id']}/frames/stream"
    with httpx.stream("GET", url, timeout=120) as r:
        for line in r.iter_lines():
            seen.append((json.loads(line)["frame"], progress(video_fleet, job["id"])["status"]))
    assert [f for f, _ in seen] == list(range(20))
    assert seen[0][1] == "running"  # the first frames came while the job was running
    assert wait_end(video_fleet.base_url, job["id"])["status"] == "succeeded"


def test_cancel_stops_within_one_frame(video_fleet: Fleet) -> None:
    video = upload(video_fleet.base_url, encode_video(moving_frames(80)))
    job = submit(
        video_fleet.base_url,
        {"mode": "video", "video_id": video["video_id"], "prompts": [{**CLICK, "frame": 0}]},
    )
    wait_frames(video_fleet, job["id"], 3)
    cancelled = httpx.delete(f"{video_fleet.base_url}/v1/jobs/{job['id']}").json()
    assert cancelled["status"] == "cancelled"
    at_cancel = cancelled["progress"]["frames_done"]
    time.sleep(3)  # several frames' time
    after = progress(video_fleet, job["id"])
    assert after["status"] == "cancelled"
    assert at_cancel <= after["progress"]["frames_done"] <= at_cancel + 1
    assert len(frames(video_fleet.base_url, job["id"])) == after["progress"]["frames_done"] < 80
    # The worker is free again.
    assert run(video_fleet.base_url, prompt_job())["status"] == "succeeded"


def prompt_job(seed: int = 3) -> dict[str, Any]:
    return {"image": b64(encode(scene(96, 72, seed=seed))), "prompts": [{"box": [5, 5, 60, 50]}]}


def test_clicks_are_answered_while_a_long_video_is_tracked(video_fleet: Fleet) -> None:
    video = upload(video_fleet.base_url, encode_video(moving_frames(80)))
    job = submit(
        video_fleet.base_url,
        {"mode": "video", "video_id": video["video_id"], "prompts": [{**CLICK, "frame": 0}]},
    )
    wait_frames(video_fleet, job["id"], 2)
    try:
        for seed in (4, 5):
            started = time.monotonic()
            click = run(video_fleet.base_url, prompt_job(seed))
            latency = time.monotonic() - started
            state = progress(video_fleet, job["id"])
            assert state["status"] == "running", (state, latency)
            assert state["progress"]["frames_done"] < 80
            assert click["result"]["masks"]
    finally:
        httpx.delete(f"{video_fleet.base_url}/v1/jobs/{job['id']}")


def test_frames_of_an_image_job_or_unknown_job(video_fleet: Fleet) -> None:
    image_job = run(video_fleet.base_url, prompt_job(6))
    r = httpx.get(f"{video_fleet.base_url}/v1/jobs/{image_job['id']}/frames")
    assert r.status_code == 422 and "only video jobs" in r.json()["error"]["message"]
    r = httpx.get(f"{video_fleet.base_url}/v1/jobs/{'0' * 32}/frames/stream")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
