"""At SAM 2's real 1024 input size: the fleet matches Meta's predictor unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import oracle
from tests.conftest import start_fleet
from tests.support import Fleet, RedisServer, encode, scene
from tests.system.client import b64, run


@pytest.fixture(scope="module")
def fleet_1024(
    redis_server: RedisServer, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    f = start_fleet(
        redis_server, tiny_checkpoint, tmp_path_factory.mktemp("fleet1024"), "full1024", None
    )
    yield f
    f.stop()


def test_point_box_and_multi_object_at_1024(fleet_1024: Fleet, tiny_checkpoint: Path) -> None:
    image = scene(640, 480, seed=13)
    prompts = [
        {"points": [[320, 240]], "labels": [1]},
        {"box": [100, 80, 500, 400]},
        {"box": [50, 50, 300, 300], "points": [[100, 100], [250, 250]], "labels": [1, 0]},
    ]
    job = run(fleet_1024.base_url, {"image": b64(encode(image)), "prompts": prompts})
    direct = oracle.predict(tiny_checkpoint, 1024, image, prompts, True)
    got = [m["segmentation"]["counts"] for m in job["result"]["masks"]]
    assert got == [c for obj in direct for c, _ in obj]
    assert len(got) == 9
