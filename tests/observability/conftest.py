"""One fleet for the observability tests: the API and two workers, JSON logs, traffic.

Two workers on one host, each with its own metrics port, so the tests also show that
their metrics add up. The workers accept smaller images than the API, which gives a
job that fails inside a worker (image_too_large) without any fault injection.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from sam2fleet.launcher.redis_server import free_port
from tests.conftest import SMALL
from tests.support import Fleet, RedisServer, encode, fleet_env, scene
from tests.system.client import b64, submit, wait

WORKERS = ("w0", "w1")
WORKER_MAX_PIXELS = 100_000


class MetricsFleet(Fleet):
    def start_worker_on(self, name: str, **extra: str) -> subprocess.Popen[bytes]:
        env, self.env = self.env, {**self.env, **extra}
        try:
            proc = self._spawn(
                name, [sys.executable, "-m", "sam2fleet.cli", "worker", "--name", name]
            )
        finally:
            self.env = env
        self.procs[name] = proc
        return proc


@dataclass
class Traffic:
    succeeded: dict[str, list[str]] = field(default_factory=lambda: {"prompt": [], "auto": []})
    failed: list[str] = field(default_factory=list)
    video: list[str] = field(default_factory=list)  # succeeded video jobs of VIDEO_FRAMES

    def all_ids(self) -> list[str]:
        return [*self.succeeded["prompt"], *self.succeeded["auto"], *self.failed, *self.video]


@dataclass
class ObsFleet:
    fleet: MetricsFleet
    worker_ports: dict[str, int]
    redis_url: str
    prefix: str

    @property
    def api(self) -> str:
        return self.fleet.base_url

    def worker_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.worker_ports[name]}/metrics"

    def run_traffic(self, traffic: Traffic, rounds: int = 1) -> None:
        """Jobs of each mode, one failing in the worker, and a few refused requests."""
        for i in range(rounds):
            image = b64(encode(scene(200, 150, seed=len(traffic.all_ids()) + i)))
            ids = {
                "prompt": [
                    submit(self.api, {"image": image, "prompts": p})["id"]
                    for p in (
                        [{"points": [[60, 50]], "labels": [1]}],
                        [{"box": [20, 20, 150, 100]}, {"points": [[100, 80]], "labels": [1]}],
                    )
                ],
                "auto": [
                    submit(
                        self.api, {"image": image, "mode": "auto", "auto": {"points_per_side": 4}}
                    )["id"]
                ],
            }
            video = self.run_video(i)
            big = b64(encode(scene(400, 300, seed=9)))  # 120,000 px: over the workers' cap
            failing = submit(self.api, {"image": big, "prompts": [{"box": [1, 1, 50, 50]}]})
            for mode, job_ids in ids.items():
                for job_id in job_ids:
                    job = wait(self.api, job_id)
                    assert job["status"] == "succeeded", job
                    traffic.succeeded[mode].append(job_id)
            job = wait(self.api, video)
            assert job["status"] == "succeeded", job
            traffic.video.append(video)
            job = wait(self.api, failing["id"])
            assert job["status"] == "failed" and job["error"]["type"] == "image_too_large", job
            traffic.failed.append(failing["id"])
            # Refused at the gateway: 503 (no worker serves this model), 422, 404.
            r = httpx.post(
                f"{self.api}/v1/jobs",
                json={"image": image, "mode": "auto", "model": "sam2.1_hiera_large"},
            )
            assert r.status_code == 503, r.text
            assert httpx.post(f"{self.api}/v1/jobs", json={"prompts": []}).status_code == 422
            assert httpx.get(f"{self.api}/v1/jobs/{'0' * 32}").status_code == 404

    def run_video(self, seed: int) -> str:
        """A short video job (tests/observability/test_video_metrics.py)."""
        from tests.system.video_client import upload
        from tests.video_support import encode_video, moving_frames

        data = encode_video(moving_frames(VIDEO_FRAMES, 96, 64, seed=seed))
        video_id = upload(self.api, data)["video_id"]
        prompts = [{"obj_id": 1, "frame": 0, "points": [[30, 30]], "labels": [1]}]
        return submit(self.api, {"mode": "video", "video_id": video_id, "prompts": prompts})["id"]


VIDEO_FRAMES = 3


@pytest.fixture(scope="package")
def obs(
    redis_server: RedisServer, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ObsFleet]:
    prefix = "obs"
    env = fleet_env(
        redis_server.url,
        tiny_checkpoint,
        prefix,
        SMALL,
        SAM2FLEET_LOG_FORMAT="json",
        SAM2FLEET_TORCH_THREADS="1",
    )
    fleet = MetricsFleet(env, tmp_path_factory.mktemp("obs-fleet"))
    ports = {name: free_port() for name in WORKERS}
    try:
        for name in WORKERS:
            fleet.start_worker_on(
                name,
                SAM2FLEET_WORKER_METRICS_PORT=str(ports[name]),
                SAM2FLEET_MAX_IMAGE_PIXELS=str(WORKER_MAX_PIXELS),
            )
        fleet.start_api()
        fleet.wait_ready(timeout=180)
        # Ready means one warm worker; wait for both workers' metrics servers.
        deadline = time.monotonic() + 180
        for name in WORKERS:
            while True:
                try:
                    if (
                        httpx.get(f"http://127.0.0.1:{ports[name]}/metrics", timeout=2).status_code
                        == 200
                    ):
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, fleet.log(name)
                time.sleep(0.2)
        yield ObsFleet(fleet, ports, redis_server.url, prefix)
    finally:
        fleet.stop()


@pytest.fixture(scope="package")
def traffic(obs: ObsFleet) -> Traffic:
    t = Traffic()
    obs.run_traffic(t)
    return t
