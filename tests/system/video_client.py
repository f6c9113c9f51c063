"""HTTP helpers the video system tests share, and a fleet fixture for them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import start_fleet
from tests.support import Fleet, RedisServer
from tests.system.client import submit

VIDEO_SIZE = 128  # reduced input size of the video tests (a frame: ~0.3 s on one core)
# Video workers in the tests run one torch thread (the oracle does too: CPU results
# depend on the thread count), and Meta's precision, bf16 autocast.
VIDEO_ENV = {"SAM2FLEET_TORCH_THREADS": "1", "SAM2FLEET_PRECISION": "bf16"}


def video_fleet_fixture(prefix: str, image_size: int | None = VIDEO_SIZE, **env: str) -> Any:
    """A module-scoped fleet on the video checkpoint (objects present), its own prefix."""

    @pytest.fixture(scope="module")
    def _fleet(
        redis_server: RedisServer,
        video_checkpoint: Path,
        tmp_path_factory: pytest.TempPathFactory,
    ) -> Iterator[Fleet]:
        log_dir = tmp_path_factory.mktemp(prefix)
        settings = {**VIDEO_ENV, **env}
        f = start_fleet(redis_server, video_checkpoint, log_dir, prefix, image_size, **settings)
        yield f
        f.stop()

    return _fleet


def wait_end(base_url: str, job_id: str, timeout: float = 300) -> dict[str, Any]:
    """Long-poll until the job has ended: video jobs outlast one `?wait=` (60 s cap)."""
    deadline = time.monotonic() + timeout
    while True:
        left = max(1.0, deadline - time.monotonic())
        r = httpx.get(f"{base_url}/v1/jobs/{job_id}", params={"wait": min(left, 60)}, timeout=90)
        assert r.status_code == 200, r.text
        job = r.json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job not ended after {timeout} s: {job}"


def upload(base_url: str, data: bytes, **params: Any) -> dict[str, Any]:
    r = httpx.post(f"{base_url}/v1/videos", content=data, params=params, timeout=60)
    assert r.status_code == 201, r.text
    return r.json()


def frames(base_url: str, job_id: str, limit: int = 1000) -> list[dict[str, Any]]:
    """Every frame record of a job, page by page."""
    out: list[dict[str, Any]] = []
    start: int | None = 0
    while start is not None:
        r = httpx.get(
            f"{base_url}/v1/jobs/{job_id}/frames",
            params={"start": start, "limit": limit},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        page = r.json()
        out.extend(page["frames"])
        start = page["next_start"]
    return out


def track(
    base_url: str, video_id: str, prompts: list[dict[str, Any]], timeout: float = 300, **video: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run a video job to its end: the job and its frame records."""
    body = {"mode": "video", "video_id": video_id, "prompts": prompts, "video": video}
    job = wait_end(base_url, submit(base_url, body)["id"], timeout)
    assert job["status"] == "succeeded", job
    return job, frames(base_url, job["id"])


def by_frame(records: list[dict[str, Any]]) -> dict[int, dict[int, str]]:
    return {
        r["frame"]: {o["obj_id"]: o["segmentation"]["counts"] for o in r["objects"]}
        for r in records
    }
