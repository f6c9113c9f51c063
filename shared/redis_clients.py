"""Every Redis client the fleet makes, built from `SAM2FLEET_REDIS_URL` in one place.

Accepted URLs:

    redis://[[user]:password@]host[:port][/db]      one Redis
    rediss://...                                     the same over TLS
    unix://[[user]:password@]/path/redis.sock[?db=N] a local socket
    sentinel://[[user]:password@]host[:port],host[:port]/db?master=NAME
                                                     Redis Sentinel (port 26379 by
                                                     default); optional query fields
                                                     sentinel_password and
                                                     sentinel_username for sentinels
                                                     that require a password

With `sentinel://` every client asks the sentinels which server is the primary
before it connects, and asks again after losing a connection: a failover costs a
reconnect, not a restart. The password in the URL is the data servers' password
(primary and replicas); the sentinels' own is `sentinel_password`. List every
sentinel: the first that answers is used, so any one of them is enough. A primary
that refuses writes for want of replicas (`min-replicas-to-write`: the sentinels
have replaced it) sends these clients back to the sentinels too, and callers ask them
every heartbeat (`follow_primary`). kombu's own connections (the broker) follow a
failover when their connection fails or the old primary answers READONLY.

Redis Cluster is refused (`redis+cluster://`, or a server that reports
`cluster_enabled:1`): Celery's broker needs a queue's keys and the fleet's scripts
need their keys on one server, which a cluster does not give (a Celery request open
since 2015). Sentinel is the fleet's high availability.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlsplit

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelConnectionPool
from redis.asyncio.sentinel import SentinelManagedConnection as AsyncSentinelManagedConnection
from redis.backoff import NoBackoff
from redis.retry import Retry as SyncRetry
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

SENTINEL_PORT = 26379
_DIRECT = ("redis", "rediss", "unix")
_CLUSTER = ("redis+cluster", "rediss+cluster", "cluster")

CLUSTER_REFUSED = (
    "Redis Cluster cannot be the fleet's Redis: Celery's broker cannot run on a cluster "
    "(an open Celery request since 2015) and the fleet's scripts read keys of several "
    "slots. Use one Redis, or Redis Sentinel for failover: "
    "sentinel://host:26379,host:26379/0?master=NAME"
)


class ClusterRefused(ValueError):
    """The URL or the server is a Redis Cluster."""


@dataclass(frozen=True)
class RedisTarget:
    """A parsed `SAM2FLEET_REDIS_URL`."""

    url: str
    scheme: str
    # Sentinel only: the sentinels, the primary's name in their configuration, the db.
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)

    @property
    def is_sentinel(self) -> bool:
        return self.scheme == "sentinel"

    def redacted(self) -> str:
        """The URL without its passwords, for logs and messages."""
        parts = urlsplit(self.url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = "***@" + netloc.rsplit("@", 1)[1]
        query = "&".join(
            f"{k}=***" if k == "sentinel_password" else f"{k}={v[0]}"
            for k, v in parse_qs(parts.query).items()
        )
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def parse(url: str) -> RedisTarget:
    """Check a Redis URL and split a sentinel URL into its parts; ValueError if bad."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in _CLUSTER:
        raise ClusterRefused(CLUSTER_REFUSED)
    if scheme in _DIRECT:
        return RedisTarget(url=url, scheme=scheme)
    if scheme != "sentinel":
        raise ValueError(
            f"unsupported Redis URL scheme {scheme or '(none)'!r}: use redis://, rediss://, "
            "unix:// or sentinel://host:port,host:port/db?master=NAME"
        )
    rest = url.split("://", 1)[1]
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    if "?" in netloc:  # sentinel://h:p?master=x, no db
        netloc, _, query = netloc.partition("?")
    userinfo, _, hosts = netloc.rpartition("@")
    username, password = _userinfo(userinfo)
    sentinels = tuple(_host_port(h) for h in hosts.split(",") if h)
    if not sentinels:
        raise ValueError("a sentinel:// URL names at least one sentinel host:port")
    fields = parse_qs(query)
    master = (fields.get("master") or [""])[0]
    if not master:
        raise ValueError(
            "a sentinel:// URL names the primary as the sentinels know it: ?master=NAME"
        )
    unknown = set(fields) - {"master", "sentinel_password", "sentinel_username"}
    if unknown:
        raise ValueError(f"unknown field(s) in the sentinel URL: {', '.join(sorted(unknown))}")
    db_text = path.strip("/") or "0"
    if not db_text.isdigit():
        raise ValueError(f"the sentinel URL's database must be a number, not {db_text!r}")
    return RedisTarget(
        url=url,
        scheme="sentinel",
        sentinels=sentinels,
        master=master,
        db=int(db_text),
        username=username,
        password=password,
        sentinel_username=_first(fields, "sentinel_username"),
        sentinel_password=_first(fields, "sentinel_password"),
    )


def _first(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    return values[0] if values else None


def _userinfo(text: str) -> tuple[str | None, str | None]:
    if not text:
        return None, None
    user, colon, password = text.partition(":")
    return (unquote(user) or None), (unquote(password) if colon else None)


def _host_port(text: str) -> tuple[str, int]:
    if text.startswith("["):  # [::1]:26379
        host, _, port = text[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError(f"bad sentinel address {text!r}: host:port")
    if port and not port.isdigit():
        raise ValueError(f"bad sentinel port in {text!r}")
    return host, int(port) if port else SENTINEL_PORT


_NO_REPLICAS = "NOREPLICAS"
_LOST = "the primary has no replica left; asking the sentinels again"


class _PrimaryConnection(SentinelManagedConnection):  # type: ignore[misc]
    """A connection to the primary that takes `NOREPLICAS` as the primary lost.

    A primary run with `min-replicas-to-write` (docs/reliability.md) refuses writes
    once no replica follows it: the sentinels have promoted another server and this
    one has not been told yet. redis-py reconnects through the sentinels after
    `READONLY` (the server already demoted); this does the same a step earlier, so
    the caller's retry lands on the new primary instead of failing."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except redis.ResponseError as exc:
            if not str(exc).startswith(_NO_REPLICAS):
                raise
            self.disconnect()
            raise redis.ConnectionError(_LOST) from exc


class _AsyncPrimaryConnection(AsyncSentinelManagedConnection):  # type: ignore[misc]
    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except redis.ResponseError as exc:
            if not str(exc).startswith(_NO_REPLICAS):
                raise
            await self.disconnect()
            raise redis.ConnectionError(_LOST) from exc


def _sentinel_kwargs(
    target: RedisTarget, options: dict[str, Any], retry: Any = None
) -> dict[str, Any]:
    """Connection options for the sentinels themselves: the timeouts, their own login,
    and no retries. redis-py retries a refused connection three times with backoff
    (seconds) before trying the next sentinel, and kombu asks the sentinels afresh for
    every channel it opens: with the first listed sentinel down, a Celery worker took
    a minute to start and as long to reconnect. The next sentinel is the retry."""
    kwargs = {k: v for k, v in options.items() if k.startswith("socket_")}
    kwargs["retry"] = retry if retry is not None else SyncRetry(NoBackoff(), 0)
    if target.sentinel_password is not None:
        kwargs["password"] = target.sentinel_password
    if target.sentinel_username is not None:
        kwargs["username"] = target.sentinel_username
    return kwargs


def _login(target: RedisTarget) -> dict[str, Any]:
    login: dict[str, Any] = {"db": target.db}
    if target.password is not None:
        login["password"] = target.password
    if target.username is not None:
        login["username"] = target.username
    return login


def sync_client(url: str, **options: Any) -> redis.Redis:
    """A redis-py client for `url`; `options` are redis-py's connection options
    (socket_timeout, retry_on_timeout, ...). Through the sentinels: a client of the
    current primary, which follows a failover by itself."""
    target = parse(url)
    if not target.is_sentinel:
        return redis.Redis.from_url(url, **options)
    sentinel = Sentinel(
        list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(target, options), **options
    )
    client: redis.Redis = sentinel.master_for(
        target.master, connection_class=_PrimaryConnection, **_login(target)
    )
    return client


def async_client(url: str, **options: Any) -> aredis.Redis:
    """The same as `sync_client` for asyncio (the API)."""
    target = parse(url)
    if not target.is_sentinel:
        return aredis.Redis.from_url(url, **options)
    sentinel = AsyncSentinel(
        list(target.sentinels),
        sentinel_kwargs=_sentinel_kwargs(target, options, AsyncRetry(NoBackoff(), 0)),
        **options,
    )
    client: aredis.Redis = sentinel.master_for(
        target.master, connection_class=_AsyncPrimaryConnection, **_login(target)
    )
    return client


def close_sync(client: redis.Redis) -> None:
    """Close a client and, for a sentinel client, its connections to the sentinels."""
    client.close()
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        sentinel.close()


async def close_async(client: aredis.Redis) -> None:
    await client.aclose()
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        await sentinel.aclose()


def follow_primary(client: redis.Redis) -> None:
    """Ask the sentinels which server is the primary now, and drop idle pooled
    connections to a former one. A primary the sentinels have replaced can still be
    up and take writes (a false failover on a starved host, a network partition)
    until they demote it, seconds later, and a connection opened before keeps
    writing there: writes the failover then discards. Called every heartbeat, this
    bounds that window to one beat. Nothing for one Redis."""
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        pool.get_master_address()


async def follow_primary_async(client: aredis.Redis) -> None:
    pool = client.connection_pool
    if isinstance(pool, AsyncSentinelConnectionPool):
        await pool.get_master_address()


def celery_broker(url: str) -> tuple[str, dict[str, Any]]:
    """Celery's `broker_url` and the transport options it needs besides the fleet's own.

    Sentinel becomes kombu's sentinel transport: one `sentinel://host:port/db` per
    sentinel joined by `;` (kombu asks them in turn), the primary's name as
    `master_name`, the sentinels' password in `sentinel_kwargs`. A unix socket
    becomes kombu's `redis+socket://`."""
    target = parse(url)
    if target.scheme == "unix":
        # kombu reads the database of a socket URL from `virtual_host`, not `db`.
        rest, _, query = url.split("://", 1)[1].partition("?")
        fields = [f"virtual_host={v}" if k == "db" else f"{k}={v}" for k, v in parse_qsl(query)]
        return "redis+socket://" + rest + ("?" + "&".join(fields) if fields else ""), {}
    if not target.is_sentinel:
        return url, {}
    login = ""
    if target.username is not None or target.password is not None:
        login = f"{quote(target.username or '', safe='')}:{quote(target.password or '', safe='')}@"
    broker = ";".join(
        f"sentinel://{login}{_bracket(host)}:{port}/{target.db}" for host, port in target.sentinels
    )
    timeouts = {"socket_timeout": 5, "socket_connect_timeout": 5}
    return broker, {
        "master_name": target.master,
        "sentinel_kwargs": _sentinel_kwargs(target, timeouts),
    }


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def cluster_enabled(info: dict[str, Any]) -> bool:
    """`INFO cluster` says the server is a cluster node."""
    return str(info.get("cluster_enabled", "0")) == "1"


def refuse_cluster(client: redis.Redis) -> None:
    """ClusterRefused if the server behind `client` is a cluster node; a Redis that does
    not answer is left to the caller's own retries."""
    try:
        info = client.info("cluster")
    except (redis.RedisError, OSError):
        return
    if cluster_enabled(info):
        raise ClusterRefused(CLUSTER_REFUSED)


async def refuse_cluster_async(client: aredis.Redis) -> None:
    try:
        info = await client.info("cluster")
    except (redis.RedisError, OSError):
        return
    if cluster_enabled(info):
        raise ClusterRefused(CLUSTER_REFUSED)
