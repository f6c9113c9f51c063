"""`sam2fleet up`: the whole fleet on one machine, supervised.

Starts Redis (or uses one that answers), one worker per visible GPU (or one CPU
worker) and the API; restarts a worker or the API that dies; replaces a worker that
has not warmed up within `SAM2FLEET_WORKER_WARMUP_TIMEOUT_S`, printing its last log
lines; on Ctrl-C or SIGTERM stops everything it started, workers first so they
finish or requeue their job, and SIGKILLs what is still there after
`SAM2FLEET_SHUTDOWN_GRACE_S` (a stuck model process included).

Each child runs in a process group of its own, so Ctrl-C reaches only this process
(which then stops the children in order) and a worker is killed with its pool.
Children's output passes through here line by line, and the last lines of each are
kept for the watchdog's report.

While the model loads it waits by reading the workers' heartbeats in Redis, as the
API's /readyz does, rather than asking /readyz twice a second: each request would
print an access-log line among the workers' own output.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import redis

from sam2fleet.launcher.redis_server import RedisHandle, ensure_redis
from sam2fleet.shared import redis_clients
from sam2fleet.shared.records import Heartbeat, Keys
from sam2fleet.shared.settings import Settings

TAIL_LINES = 20  # of a child's output, kept for the watchdog's report


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    backoff_until: float = 0.0
    # Monotonic time from which the watchdog counts: the start, then each time the
    # worker was last seen warm (a replaced model process must warm up again).
    warm_seen_at: float = 0.0
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))

    def start(self) -> None:
        self.tail.clear()
        self.process = subprocess.Popen(
            self.args,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0,  # its own group: Ctrl-C comes here, a kill takes the pool too
        )
        self.started_at = self.warm_seen_at = time.monotonic()
        assert self.process.stdout is not None
        threading.Thread(target=_relay, args=(self.process.stdout, self.tail), daemon=True).start()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the child's whole process group (a worker's pool processes too)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the group is gone already
        self.process.wait()


def _relay(stream: IO[bytes], tail: deque[str]) -> None:
    """Print a child's lines as they come, keeping the last few."""
    for raw in stream:
        line = raw.decode(errors="replace").rstrip("\n")
        tail.append(line)
        print(line, flush=True)
    stream.close()


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
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        for child in self.children:
            self._start(child)
        base = f"http://{self.host}:{self.port}"
        announced = ready = False
        client = redis_clients.sync_client(
            self.redis.url, socket_timeout=2, socket_connect_timeout=2
        )
        try:
            while not self.stopping:
                self._supervise()
                warm = warm_supervisors(client, self.settings)
                self._watch_warmups(warm)
                if not announced and probe(f"{base}/livez"):
                    announced = True
                    say(f"API: {base}  (docs: {base}/docs)")
                    say(f"playground: {base}/playground/  (click to segment in a browser)")
                    say("waiting for a worker to load the model and finish its warm-up...")
                if announced and not ready and warm:
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

    def _watch_warmups(self, warm: set[int]) -> None:
        """Replace a worker not seen warm within the bound, saying so loudly: a
        model load that hangs must not leave the fleet waiting silently forever."""
        now, bound = time.monotonic(), self.settings.worker_warmup_timeout_s
        for child in self.children:
            if child.name == "api" or not child.alive() or child.process is None:
                continue
            if child.process.pid in warm:
                child.warm_seen_at = now
            elif now - child.warm_seen_at > bound:
                last = "\n".join(f"    {line}" for line in child.tail) or "    (no output)"
                say(
                    f"{child.name}: no warm-up reported within {bound:.0f}s "
                    f"(SAM2FLEET_WORKER_WARMUP_TIMEOUT_S); its last lines:\n{last}"
                )
                say(f"{child.name}: killing it (pid {child.process.pid}) and starting another")
                child.kill()
                child.restarts += 1
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
        # Whatever has not stopped within the grace period is SIGKILLed with its
        # process group: a stuck model process must not hold up Ctrl-C, and a job it
        # held is redelivered (acks late).
        for child in sorted(self.children, key=lambda c: c.name == "api"):
            if child.alive() and child.process is not None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_grace_s
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                grace = self.settings.shutdown_grace_s
                say(f"{child.name}: still running after {grace:.0f}s; killed")
            child.kill()  # the rest of its group (a pool process) too
        if self.redis is not None:
            self.redis.stop()
        say("stopped.")


def warm_supervisors(client: redis.Redis, settings: Settings) -> set[int]:
    """The Celery supervisors (pids) of workers that finished their warm-up and were
    heard from within the heartbeat window: the workers the API's /readyz counts."""
    keys, now, found = Keys(settings.key_prefix), time.time(), set()
    try:
        for key in client.scan_iter(match=keys.workers_pattern(), count=100):
            beat = Heartbeat.from_redis(client.hgetall(key))
            if beat is not None and beat.warm and beat.age(now) <= settings.heartbeat_ttl_s:
                found.add(beat.parent_pid)
    except redis.RedisError:
        return set()  # Redis restarting: not ready yet
    return found


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
