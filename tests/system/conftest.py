"""A whole fleet per module: real Redis, a real Celery worker process, real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SMALL
from tests.support import Fleet, RedisServer, fleet_env


def start_fleet(
    redis: RedisServer,
    checkpoint: Path,
    log_dir: Path,
    prefix: str,
    image_size: int | None,
    **extra: str,
) -> Fleet:
    fleet = Fleet(fleet_env(redis.url, checkpoint, prefix, image_size, **extra), log_dir)
    fleet.start_worker("w0")
    fleet.start_api()
    try:
        fleet.wait_ready()
    except BaseException:
        fleet.stop()
        raise
    return fleet


@pytest.fixture(scope="module")
def fleet(
    redis_server: RedisServer,
    tiny_checkpoint: Path,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Fleet]:
    prefix = f"sys{abs(hash(request.module.__name__)) % 10**6}"
    f = start_fleet(redis_server, tiny_checkpoint, tmp_path_factory.mktemp("fleet"), prefix, SMALL)
    yield f
    f.stop()
