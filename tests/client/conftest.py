"""A fleet per module for the client tests, built like the system tests' one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SMALL
from tests.support import Fleet, RedisServer
from tests.system.conftest import start_fleet


@pytest.fixture(scope="module")
def fleet(
    redis_server: RedisServer,
    tiny_checkpoint: Path,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Fleet]:
    prefix = f"cli{abs(hash(request.module.__name__)) % 10**6}"
    f = start_fleet(redis_server, tiny_checkpoint, tmp_path_factory.mktemp("fleet"), prefix, SMALL)
    yield f
    f.stop()
