"""The gateway served by a real uvicorn in a thread, against a real Redis, no worker."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import redis
import uvicorn

from sam2fleet.api.main import create_app
from sam2fleet.launcher.redis_server import free_port
from sam2fleet.shared.settings import Settings
from tests.support import RedisServer


@pytest.fixture
def settings(redis_server: RedisServer, prefix: str) -> Settings:
    return Settings(
        redis_url=redis_server.url,
        key_prefix=prefix,
        max_request_bytes=2_000_000,
        max_image_bytes=1_000_000,
        max_image_pixels=4_000_000,
        max_objects=4,
        max_points=5,
    )


@contextmanager
def serve(settings: Settings) -> Iterator[httpx.Client]:
    """The app in a real uvicorn on a free port, in a thread; a client for it."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        yield c
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def client(settings: Settings) -> Iterator[httpx.Client]:
    with serve(settings) as c:
        yield c


@pytest.fixture
def rdb(redis_server: RedisServer) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_server.url)
    yield r
    r.close()
