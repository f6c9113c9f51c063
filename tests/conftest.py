"""Session-wide real parts (a Redis server, a SAM 2 tiny checkpoint made here) and a
whole fleet per module: a real Celery worker process and real HTTP."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import Fleet, RedisServer, fleet_env

SEED = 1234
SMALL = 256  # reduced input size for fast CPU tests; one test module runs at 1024


def pytest_configure(config: pytest.Config) -> None:
    """The suite states every setting it relies on: a developer's own `SAM2FLEET_*`
    environment (a Redis URL, API keys, a device) must not reach the `Settings` the
    tests build, nor the processes they start."""
    for name in [n for n in os.environ if n.startswith("SAM2FLEET_")]:
        del os.environ[name]


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
    from sam2fleet.shared.models import MODELS
    from sam2fleet.worker.weights import write_random_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "sam2.1_hiera_tiny-random.pt"
    return write_random_checkpoint(MODELS["sam2.1_hiera_tiny"], path, SEED)


# Added to the last bias of SAM 2's object-score head in the video tests' checkpoint:
# with seeded random weights that head says "absent" on every frame (empty masks
# everywhere, so every comparison would be trivially equal); +1 makes it say
# "present" (logits about 0.9) while the rest of the network is untouched.
VIDEO_OBJECT_BIAS = 1.0


@pytest.fixture(scope="session")
def video_checkpoint(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint, with objects that SAM 2 sees (see VIDEO_OBJECT_BIAS). The
    image tests keep `tiny_checkpoint`: their oracles are calibrated on it."""
    import torch

    payload = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    payload["model"]["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += VIDEO_OBJECT_BIAS
    path = tmp_path_factory.mktemp("ckpt-video") / "sam2.1_hiera_tiny-random-video.pt"
    torch.save(payload, path)  # keeps the random-weights marker: results say "random"
    return path


def start_fleet(
    redis: RedisServer,
    checkpoint: Path,
    log_dir: Path,
    prefix: str,
    image_size: int | None,
    **extra: str,
) -> Fleet:
    """A real worker process and a real API process (uvicorn), ready to serve."""
    fleet = Fleet(fleet_env(redis.url, checkpoint, prefix, image_size, **extra), log_dir)
    fleet.start_worker("w0")
    fleet.start_api()
    try:
        fleet.wait_ready()
    except BaseException:
        fleet.stop()
        raise
    return fleet


def fleet_fixture(prefix: str, **env: str) -> Any:
    """A module-scoped fixture: a whole fleet with these settings, on its own prefix."""

    @pytest.fixture(scope="module")
    def _fleet(
        redis_server: RedisServer, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[Fleet]:
        log_dir = tmp_path_factory.mktemp(prefix)
        f = start_fleet(redis_server, tiny_checkpoint, log_dir, prefix, SMALL, **env)
        yield f
        f.stop()

    return _fleet


@pytest.fixture(scope="module")
def fleet(
    redis_server: RedisServer,
    tiny_checkpoint: Path,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Fleet]:
    """A whole fleet per test module, at the reduced input size, on its own key prefix."""
    prefix = f"m{abs(hash(request.module.__name__)) % 10**6}"
    f = start_fleet(redis_server, tiny_checkpoint, tmp_path_factory.mktemp("fleet"), prefix, SMALL)
    yield f
    f.stop()
