"""A fleet on hosts of one machine (tests/multihost/netns.py): Redis, the API, worker
hosts and a client host from which requests are sent, plus a monitor host for
Prometheus. Used by the tests beside this module and by benchmarks/multihost.py."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import redis

from tests.multihost.netns import Host, Network, copy_file
from tests.support import fleet_env

T = TypeVar("T")

REDIS_PORT = 6379
API_PORT = 8000
WORKER_METRICS_PORT = 9101  # the same port on every worker host: they are separate hosts
PROMETHEUS_PORT = 9090
WORKERS = ("worker-a", "worker-b")
WORKER_HOSTS = WORKERS
ADDRESSES = {"redis": 1, "api": 2, "worker-a": 3, "worker-b": 4, "monitor": 5, "client": 9}

# Short heartbeats so a lost host is noticed in seconds here (the defaults, 5 s and
# 20 s, give a bound of 25 s; docs/reliability.md).
ENV = {
    "SAM2FLEET_HEARTBEAT_INTERVAL_S": "1",
    "SAM2FLEET_HEARTBEAT_TTL_S": "5",
    "SAM2FLEET_FAULT_INJECTION": "1",
    "SAM2FLEET_WORKER_METRICS_PORT": str(WORKER_METRICS_PORT),
    "SAM2FLEET_WORKER_METRICS_HOST": "0.0.0.0",
    "SAM2FLEET_REDIS_RETRY_S": "60",  # a host cut off keeps its result until it is back
}


@dataclass
class MultiHost:
    net: Network
    env: dict[str, str]
    prefix: str

    def host(self, name: str) -> Host:
        return self.net.hosts[name]

    @property
    def api(self) -> str:
        return f"http://{self.host('api').address}:{API_PORT}"

    @property
    def redis_url(self) -> str:
        return f"redis://{self.host('redis').address}:{REDIS_PORT}/0"

    def client(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the client host: its requests travel the test's network."""
        return self.host("client").call(fn)

    def redis(self, fn: Callable[[redis.Redis], T]) -> T:
        def with_client() -> T:
            r = redis.Redis.from_url(self.redis_url, socket_timeout=10)
            try:
                return fn(r)
            finally:
                r.close()

        return self.client(with_client)

    def start_worker(self, name: str) -> None:
        host = self.host(name)
        env = {
            **self.env,
            # Its own copy of the checkpoint, in its own folder.
            "SAM2FLEET_CHECKPOINT": str(host.dir / Path(self.env["SAM2FLEET_CHECKPOINT"]).name),
            "SAM2FLEET_CHECKPOINT_DIR": str(host.dir),
        }
        host.spawn(
            "worker",
            [sys.executable, "-m", "sam2fleet.cli", "worker", "--name", name.replace("-", "")],
            env,
            host.dir,
        )

    def warm_workers(self) -> dict[str, dict[str, str]]:
        """Heartbeats of the workers, by their key's worker name (`host:pid`)."""

        def read(r: redis.Redis) -> dict[str, dict[str, str]]:
            out = {}
            for key in r.scan_iter(f"{self.prefix}:worker:*"):
                beat = {k.decode(): v.decode() for k, v in r.hgetall(key).items()}
                if beat.get("warm") == "1":
                    out[key.decode().split(":worker:", 1)[1]] = beat
            return out

        return self.redis(read)

    def wait_workers(self, names: tuple[str, ...], timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while True:
            hosts = {w.split(":")[0] for w in self.warm_workers()}
            if set(names) <= hosts:
                return
            for name in names:
                proc = self.host(name).procs["worker"]
                assert proc.poll() is None, f"{name} exited:\n{self.host(name).log('worker')}"
            assert time.monotonic() < deadline, "workers not warm:\n" + "\n".join(
                self.host(n).log("worker") for n in names
            )
            time.sleep(0.5)

    def job(self, job_id: str) -> dict[str, str]:
        key = f"{self.prefix}:job:{job_id}"
        return self.redis(lambda r: {k.decode(): v.decode() for k, v in r.hgetall(key).items()})

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client(lambda: httpx.get(f"{self.api}{path}", timeout=30, **kwargs))


def wait_answers(fleet: MultiHost, url: str, what: str, host: Host, label: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            if fleet.client(lambda: httpx.get(url, timeout=2)).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        assert host.procs[label].poll() is None, f"{what} exited:\n{host.log(label)}"
        assert time.monotonic() < deadline, f"{what} does not answer:\n{host.log(label)}"
        time.sleep(0.3)


@contextmanager
def multihost(
    root: Path,
    checkpoint: Path,
    *,
    workers: tuple[str, ...] = WORKERS,
    image_size: int | None = 256,
    prefix: str = "mh",
    **extra: str,
) -> Iterator[MultiHost]:
    """Make the hosts, start Redis, the API and the given worker hosts' workers; take
    everything down again however the block ends."""
    net = Network(root)  # NamespaceError: the machine cannot make namespaces
    try:
        for name, index in ADDRESSES.items():
            net.add(name, index)
        redis_host = net.hosts["redis"]
        url = f"redis://{redis_host.address}:{REDIS_PORT}/0"
        env = fleet_env(url, checkpoint, prefix, image_size, **{**ENV, **extra})
        fleet = MultiHost(net, env, prefix)
        redis_host.spawn(
            "redis",
            ["redis-server", "--bind", redis_host.address, "--port", str(REDIS_PORT),
             "--save", "", "--appendonly", "no", "--protected-mode", "no",
             "--dir", str(redis_host.dir)],
            env,
            redis_host.dir,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                if fleet.redis(lambda r: r.ping()):
                    break
            except redis.RedisError:
                assert time.monotonic() < deadline, redis_host.log("redis")
                time.sleep(0.2)
        for name in WORKER_HOSTS:
            copy_file(checkpoint, net.hosts[name])
        for name in workers:
            fleet.start_worker(name)
        api = net.hosts["api"]
        api.spawn(
            "api",
            [sys.executable, "-m", "sam2fleet.cli", "api",
             "--host", api.address, "--port", str(API_PORT)],
            env,
            api.dir,
        )  # fmt: skip
        wait_answers(fleet, f"{fleet.api}/livez", "the API", api, "api")
        fleet.wait_workers(workers)
        yield fleet
    finally:
        net.close()
        assert net.leftovers() == [], net.leftovers()
