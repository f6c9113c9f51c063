"""A fleet with the fault-injection seam on and short limits, so faults resolve fast."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis

from sam2fleet.shared.images import image_id_for
from tests.conftest import SMALL
from tests.support import Fleet, RedisServer, encode, fleet_env, scene
from tests.system.client import b64

FAULT_ENV = {
    "SAM2FLEET_FAULT_INJECTION": "1",
    "SAM2FLEET_TASK_SOFT_TIME_LIMIT_S": "10",
    "SAM2FLEET_TASK_TIME_LIMIT_S": "14",
    "SAM2FLEET_VISIBILITY_TIMEOUT_S": "20",
    "SAM2FLEET_MAX_ATTEMPTS": "3",
    "SAM2FLEET_MAX_QUEUED_JOBS": "3",
    "SAM2FLEET_REDIS_RETRY_S": "20",
    "SAM2FLEET_BATCH_MAX_SIZE": "4",  # batching on, as on a GPU worker
}


class FaultFleet(Fleet):
    """A fleet plus the means to hurt it."""

    redis: redis.Redis
    prefix: str
    _seed: int = 1000

    def image(self, fault: str | None = None) -> tuple[str, str]:
        """A fresh image (base64) and its id, with a fault armed on it."""
        self._seed += 1
        data = encode(scene(96, 72, seed=self._seed))
        image_id = image_id_for(data)
        if fault:
            self.redis.set(f"{self.prefix}:fault:{image_id}", fault)
        return b64(data), image_id

    def job_body(self, fault: str | None = None, **extra: Any) -> dict[str, Any]:
        image, _ = self.image(fault)
        return {"image": image, "prompts": [{"box": [5, 5, 60, 50]}], **extra}

    def worker_pids(self) -> dict[str, int]:
        """Heartbeating model processes: name -> pid."""
        out = {}
        for key in self.redis.scan_iter(f"{self.prefix}:worker:*"):
            pid = self.redis.hget(key, "pid")
            if pid:
                out[key.decode()] = int(pid)
        return out

    def model_pid(self) -> int:
        # A SIGKILLed process's heartbeat lingers until its TTL: count the living.
        pids = [p for p in self.worker_pids().values() if psutil.pid_exists(p)]
        assert len(pids) == 1, pids
        return pids[0]

    def wait_new_model_process(self, old_pid: int, timeout: float = 180) -> float:
        """Wait for a model process other than `old_pid` to heartbeat (it does once
        warm); the wall-clock time it was first seen."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.worker_pids().values()
            if any(p != old_pid and psutil.pid_exists(p) for p in pids):
                return time.time()
            assert time.monotonic() < deadline, f"no new model process:\n{self.log('w0')}"
            time.sleep(0.05)

    def wait_status(self, job_id: str, status: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = httpx.get(f"{self.base_url}/v1/jobs/{job_id}").json()
            if job["status"] == status:
                return job
            assert time.monotonic() < deadline, job
            time.sleep(0.05)

    def restart_worker(self, name: str = "w0") -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
        for key in self.redis.scan_iter(f"{self.prefix}:worker:*"):
            self.redis.delete(key)
        self.start_worker(name)
        self.wait_ready()


def kill(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    os.kill(pid, sig)


@pytest.fixture(scope="module")
def faulty(
    redis_server: RedisServer,
    tiny_checkpoint: Path,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[FaultFleet]:
    prefix = f"flt{abs(hash(request.module.__name__)) % 10**6}"
    env = fleet_env(redis_server.url, tiny_checkpoint, prefix, SMALL, **FAULT_ENV)
    yield from running_fault_fleet(env, tmp_path_factory.mktemp("faults"), prefix)


def running_fault_fleet(env: dict[str, str], logs: Path, prefix: str) -> Iterator[FaultFleet]:
    """One worker and the API on `env`, ready; stopped when the generator is closed."""
    fleet = FaultFleet(env, logs)
    fleet.redis = redis.Redis.from_url(env["SAM2FLEET_REDIS_URL"])
    fleet.prefix = prefix
    fleet.start_worker("w0")
    fleet.start_api()
    try:
        fleet.wait_ready()
        yield fleet
    finally:
        fleet.stop()
        fleet.redis.close()
