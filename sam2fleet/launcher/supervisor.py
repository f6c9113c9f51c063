"""`sam2fleet up`: the whole fleet on one machine, supervised.

Starts Redis (or uses one that answers), one worker per visible GPU (or one CPU
worker) and the API; restarts a worker or the API that dies; on Ctrl-C or SIGTERM
stops everything it started, workers first so they finish or requeue their job.

While the model loads it waits by reading the workers' heartbeats in Redis, as the
API's /readyz does, rather than asking /readyz twice a second: each request would
print an access-log line among the workers' own output.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from sam2fleet.launcher.redis_server import RedisHandle, ensure_redis
from sam2fleet.shared import redis_clients
from sam2fleet.shared.records import Heartbeat, Keys
from sam2fleet.shared.settings import Settings


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    backoff_until: float = 0.0

    def start(self) -> None:
        self.process = subprocess.Popen(self.args, env=self.env, stdin=subprocess.DEVNULL)
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Fleet:
    settings: Settings
    host: str
    port: int
    data_dir: Path
    workers: int | None = None
    redis: RedisHandle | None = None
    children: list[Child] = field(default_factory=list)
    stopping: bool = False

    def visible_gpus(self) -> list[str]:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            return [d for d in visible.split(",") if d.strip() and d.strip() != "-1"]
        try:
            import pynvml  # nvidia-ml-py

            pynvml.nvmlInit()
            try:
                return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
            finally:
                pynvml.nvmlShutdown()
        except Exception:  # no driver, no library: a CPU machine
            return []

    def plan(self) -> None:
        env = {**os.environ, "SAM2FLEET_REDIS_URL": self.redis.url if self.redis else ""}
        gpus = self.visible_gpus()
        slots: list[tuple[str, dict[str, str]]]
        if gpus:
            slots = [
                (f"gpu{g}", {"CUDA_VISIBLE_DEVICES": g, "SAM2FLEET_DEVICE": "cuda"}) for g in gpus
            ]
        else:
            slots = [("cpu", {"SAM2FLEET_DEVICE": "cpu"})]
        if self.workers is not None:
            slots = (slots * self.workers)[: self.workers]
        py = sys.executable
        for i, (device, extra) in enumerate(slots):
            name = f"worker{i}-{device}"
            if self.settings.worker_metrics_port:  # one metrics port per worker: base + i
                extra = {
                    **extra,
                    "SAM2FLEET_WORKER_METRICS_PORT": str(self.settings.worker_metrics_port + i),
                }
            self.children.append(
                Child(name, [py, "-m", "sam2fleet.cli", "worker", "--name", name], {**env, **extra})
            )
        self.children.append(
            Child(
                "api",
                [py, "-m", "sam2fleet.cli", "api", "--host", self.host, "--port", str(self.port)],
                env,
            )
        )

    def run(self) -> int:
        self.redis = ensure_redis(
            self.settings.redis_url, self.data_dir / "redis", self.settings.redis_maxmemory_bytes
        )
        where = f" (data in {self.redis.data_dir})" if self.redis.data_dir else ""
        shown = redis_clients.parse(self.redis.url).redacted()  # no password in the log
        say(f"redis: {self.redis.source} at {shown}{where}")
        self.plan()
        for child in self.children:
            self._start(child)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        base = f"http://{self.host}:{self.port}"
        announced = ready = False
        client = redis_clients.sync_client(
            self.redis.url, socket_timeout=2, socket_connect_timeout=2
        )
        try:
            while not self.stopping:
                self._supervise()
                if not announced and probe(f"{base}/livez"):
                    announced = True
                    say(f"API: {base}  (docs: {base}/docs)")
                    say(f"playground: {base}/playground/  (click to segment in a browser)")
                    say("waiting for a worker to load the model and finish its warm-up...")
                if announced and not ready and warm_workers(client, self.settings) > 0:
                    ready = True
                    say("ready. Try:\n" + curl_example(base, self.settings.model))
                time.sleep(0.5)
        finally:
            redis_clients.close_sync(client)
            self.shutdown()
        return 0

    def _supervise(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.alive() or now < child.backoff_until:
                continue
            code = child.process.returncode if child.process else None
            # A child that dies right after starting (bad config) is retried slowly
            # instead of in a tight loop.
            quick = now - child.started_at < 10
            if child.backoff_until == 0.0 and quick and child.restarts:
                child.backoff_until = now + min(30.0, 2.0**child.restarts)
                say(
                    f"{child.name}: exited with {code}; retrying in "
                    f"{child.backoff_until - now:.0f}s"
                )
                continue
            child.backoff_until = 0.0
            child.restarts += 1
            say(f"{child.name}: exited with {code}; restarting (restart {child.restarts})")
            self._start(child)

    def _start(self, child: Child) -> None:
        child.start()
        say(f"{child.name}: started (pid {child.process.pid if child.process else '?'})")

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.stopping:
            return
        self.stopping = True
        say(f"{signal.Signals(signum).name}: stopping everything started here...")

    def shutdown(self) -> None:
        self.stopping = True
        # Workers first: a warm shutdown finishes the running job (or leaves it
        # unacknowledged for redelivery); the API last so polls keep answering.
        for child in sorted(self.children, key=lambda c: c.name == "api"):
            if child.alive() and child.process is not None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        if self.redis is not None:
            self.redis.stop()
        say("stopped.")


def warm_workers(client: redis.Redis, settings: Settings) -> int:
    """Workers that finished their warm-up and were heard from within the heartbeat
    window: the count the API's /readyz goes by."""
    keys, now, count = Keys(settings.key_prefix), time.time(), 0
    try:
        for key in client.scan_iter(match=keys.workers_pattern(), count=100):
            beat = Heartbeat.from_redis(client.hgetall(key))
            if beat is not None and beat.warm and beat.age(now) <= settings.heartbeat_ttl_s:
                count += 1
    except redis.RedisError:
        return 0  # Redis restarting: not ready yet
    return count


def probe(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def curl_example(base: str, model: str) -> str:
    return (
        f"  IMG=$(base64 -w0 your.jpg)\n"
        f"  curl -s {base}/v1/jobs -H 'content-type: application/json' \\\n"
        f'    -d \'{{"image": "\'$IMG\'", "model": "{model}", '
        f'"prompts": [{{"points": [[100, 100]], "labels": [1]}}]}}\'\n'
        f"  curl -s '{base}/v1/jobs/<id>?wait=30'"
    )


def say(message: str) -> None:
    print(f"[sam2fleet] {message}", flush=True)
