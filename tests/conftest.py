"""Session-wide real parts: a Redis server and a SAM 2 tiny checkpoint made here."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import RedisServer

SEED = 1234
SMALL = 256  # reduced input size for fast CPU tests; one test module runs at 1024


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    # Our own server on a free port: tests never touch a Redis that holds real data.
    server = RedisServer.start(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real tiny architecture, seeded random weights, Meta's {"model": ...} format."""
    from shared.checkpoints import MODELS
    from worker.weights import write_random_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "sam2.1_hiera_tiny-random.pt"
    return write_random_checkpoint(MODELS["sam2.1_hiera_tiny"], path, SEED)
