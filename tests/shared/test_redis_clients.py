"""SAM2FLEET_REDIS_URL: the URLs the fleet accepts, what each client is built from, and
Redis Cluster refused by the settings, the API and the worker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kombu import Connection
from pydantic import ValidationError

from sam2fleet.api.main import create_app
from sam2fleet.launcher.redis_server import find_server_binary, free_port, wait_until_answers
from sam2fleet.shared import redis_clients
from sam2fleet.shared.queue import make_celery
from sam2fleet.shared.settings import Settings
from tests.support import ROOT, fleet_env


def test_single_server_urls_pass_through() -> None:
    for url in ("redis://h:6379/0", "rediss://:pw@h:6380/1", "unix:///run/redis.sock?db=2"):
        target = redis_clients.parse(url)
        assert not target.is_sentinel and target.url == url


def test_a_sentinel_url_names_every_sentinel_the_primary_and_the_logins() -> None:
    target = redis_clients.parse(
        "sentinel://:s%40cret@redis-0.redis:26379,redis-1.redis,[fd00::2]:26380/3"
        "?master=sam2fleet&sentinel_password=sp"
    )
    assert target.sentinels == (
        ("redis-0.redis", 26379),
        ("redis-1.redis", 26379),
        ("fd00::2", 26380),
    )
    assert (target.master, target.db, target.password) == ("sam2fleet", 3, "s@cret")
    assert target.sentinel_password == "sp"
    shown = target.redacted()
    assert "cret" not in shown and "sp" not in shown.split("?")[1].replace("sentinel_password", "")
    assert redis_clients.parse("sentinel://h:1?master=m").db == 0


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sentinel://h:26379/0", "?master=NAME"),
        ("sentinel:///0?master=m", "at least one sentinel"),
        ("sentinel://h:26379/x?master=m", "must be a number"),
        ("sentinel://h:26379/0?master=m&mastr=n", "unknown field"),
        ("sentinel://h:port/0?master=m", "bad sentinel port"),
        ("memcached://h:1", "unsupported Redis URL scheme"),
        ("h:6379", "unsupported Redis URL scheme"),
    ],
)
def test_bad_urls_are_refused_with_what_to_write(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        redis_clients.parse(url)
    assert says in str(info.value)
    with pytest.raises(ValidationError):
        Settings(redis_url=url)


def test_a_cluster_url_stops_every_process_at_its_settings() -> None:
    with pytest.raises(redis_clients.ClusterRefused):
        redis_clients.parse("redis+cluster://h:7000")
    with pytest.raises(ValidationError, match="Celery's broker cannot run on a cluster"):
        Settings(redis_url="redis+cluster://h:7000/0")


def test_celery_uses_kombus_sentinel_transport_with_every_sentinel() -> None:
    url = "sentinel://:pw@a:1,b:2,c:3/2?master=mm&sentinel_password=sp"
    broker, options = redis_clients.celery_broker(url)
    conn = Connection(broker, transport_options=options)
    assert conn.transport_cls == "sentinel"
    assert [u.split("@")[1] for u in conn.alt] == ["a:1/2", "b:2/2", "c:3/2"]
    assert conn.password == "pw" and conn.virtual_host == "2"
    assert options["master_name"] == "mm"
    assert options["sentinel_kwargs"]["password"] == "sp"
    app = make_celery(Settings(redis_url=url))
    transport = app.conf.broker_transport_options
    assert transport["master_name"] == "mm" and transport["visibility_timeout"] > 0
    assert redis_clients.celery_broker("redis://h:1/0") == ("redis://h:1/0", {})
    # kombu names a socket's database `virtual_host`
    socket_url, _ = redis_clients.celery_broker("unix:///run/r.sock?db=3")
    assert socket_url == "redis+socket:///run/r.sock?virtual_host=3"
    assert Connection(socket_url).transport_cls == "redis"


def test_a_202_waits_for_one_replica_by_default_only_with_sentinel() -> None:
    assert Settings(redis_url="redis://h:1/0").replicas_to_ack() == 0
    assert Settings(redis_url="sentinel://h:1/0?master=m").replicas_to_ack() == 1
    explicit = Settings(redis_url="sentinel://h:1/0?master=m", redis_min_replicas_ack=0)
    assert explicit.replicas_to_ack() == 0


@pytest.fixture(scope="module")
def cluster_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server in cluster mode (a one-node cluster not yet assigned any slot)."""
    found = find_server_binary()
    assert found is not None
    folder = tmp_path_factory.mktemp("cluster")
    port = free_port()
    while port + 10000 > 65535:  # a cluster node also listens on port + 10000
        port = free_port()
    proc = subprocess.Popen(
        [found[0], "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
         "--cluster-config-file", str(folder / "nodes.conf"), "--dir", str(folder),
         "--save", "", "--logfile", str(folder / "redis.log")],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    wait_until_answers(url, proc)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_a_cluster_server_is_refused(cluster_node: str) -> None:
    client = redis.Redis.from_url(cluster_node)
    with pytest.raises(redis_clients.ClusterRefused, match="Sentinel"):
        redis_clients.refuse_cluster(client)
    client.close()
    # The API does not start on it.
    app = create_app(Settings(redis_url=cluster_node))

    async def start_api() -> None:
        async with app.router.lifespan_context(app):
            pass

    with pytest.raises(redis_clients.ClusterRefused):
        asyncio.run(start_api())


def test_a_worker_on_a_cluster_server_stops_saying_why(
    cluster_node: str, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sam2fleet.cli", "worker", "--name", "wc"],
        env=fleet_env(cluster_node, tiny_checkpoint, "clu", 256),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Redis Cluster cannot be the fleet's Redis" in done.stdout + done.stderr
