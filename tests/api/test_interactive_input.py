"""Bad input in the interactive fields (polygon output, previous masks): a clear 4xx
before anything is queued."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis

from sam2fleet.shared.settings import Settings
from tests.api.test_bad_input import IMG, _error, _no_jobs

BOX = [{"box": [0, 0, 5, 5]}]


@pytest.mark.parametrize(
    ("output", "fragment"),
    [
        ({"format": "polygon", "polygon_tolerance": 50.5}, "polygon_tolerance"),
        ({"format": "polygon", "polygon_tolerance": -1}, "polygon_tolerance"),
        ({"format": "polygon", "polygon_tolerance": "much"}, "polygon_tolerance"),
        ({"format": "rle", "polygon_tolerance": 1.0}, "format=polygon only"),
        ({"format": "polygons"}, "format"),
    ],
)
def test_bad_polygon_options_are_422(
    client: httpx.Client,
    rdb: redis.Redis,
    settings: Settings,
    output: dict[str, Any],
    fragment: str,
) -> None:
    r = client.post("/v1/jobs", json={"image": IMG, "prompts": BOX, "output": output})
    _error(r, 422, "invalid_input", fragment)
    _no_jobs(rdb, settings)


@pytest.mark.parametrize("bad", ["NaN", "Infinity"])
def test_non_finite_tolerance_is_422(client: httpx.Client, bad: str) -> None:
    body = (
        '{"image": "' + IMG + '", "prompts": [{"box": [0, 0, 5, 5]}], '
        '"output": {"format": "polygon", "polygon_tolerance": ' + bad + "}}"
    )
    r = client.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    _error(r, 422, "invalid_input", "polygon_tolerance")
