"""Property-based fuzz of the whole HTTP surface: nothing a client sends yields a 5xx.

Bodies are drawn both from arbitrary JSON and from near-valid jobs with one field
broken, so the fuzz reaches past the first validation layer. A stand-in warm-worker
heartbeat lets valid jobs be accepted (and stay queued: no worker runs here).
"""

from __future__ import annotations

import base64
import string
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sam2fleet.shared.settings import Settings
from tests.api.conftest import serve
from tests.api.test_access_and_overload import fake_warm_worker
from tests.support import encode, scene

IMG = base64.b64encode(encode(scene(40, 30))).decode()
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)
numbers = st.one_of(
    st.integers(-100, 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=3),
    st.none(),
)
prompts = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "points": st.lists(st.lists(numbers, max_size=3), max_size=4),
            "labels": st.lists(st.one_of(st.integers(-2, 3), st.text(max_size=2)), max_size=4),
            "box": st.lists(numbers, max_size=5),
            "extra": json_values,
        },
    ),
    max_size=4,
)
near_valid = st.fixed_dictionaries(
    {"image": st.sampled_from([IMG, "", "@@@", IMG[:40]])},
    optional={
        "image_id": st.text(max_size=70),
        "model": st.sampled_from(["sam2.1_hiera_tiny", "nope", ""]) | st.text(max_size=5),
        "mode": st.sampled_from(["prompt", "auto", "x"]),
        "prompts": prompts,
        "multimask": json_values,
        "auto": st.dictionaries(
            st.sampled_from(
                ["points_per_side", "points_per_batch", "pred_iou_thresh", "crop_n_layers", "bogus"]
            ),
            numbers,
            max_size=4,
        ),
        "output": st.dictionaries(
            st.sampled_from(["format", "min_score"]),
            st.one_of(numbers, st.sampled_from(["rle", "png"])),
            max_size=2,
        ),
    },
)


@pytest.fixture
def api(settings: Settings, rdb: redis.Redis) -> Iterator[httpx.Client]:
    fake_warm_worker(rdb, settings)
    with serve(settings.model_copy(update={"max_queued_jobs": 100_000})) as client:
        yield client


def _ok(r: httpx.Response) -> None:
    assert r.status_code < 500 or r.json()["error"]["type"] in ("no_worker_ready",), r.text
    if r.status_code >= 400:
        body = r.json()["error"]
        assert body["type"] and body["message"]


@FUZZ
@given(body=st.one_of(json_values, near_valid))
def test_job_bodies_never_5xx(api: httpx.Client, body: Any) -> None:
    _ok(api.post("/v1/jobs", json=body))


@FUZZ
@given(
    data=st.binary(max_size=300),
    ctype=st.sampled_from(
        ["application/json", "image/png", "multipart/form-data; boundary=x", "text/plain", ""]
    ),
)
def test_raw_bodies_never_5xx(api: httpx.Client, data: bytes, ctype: str) -> None:
    _ok(api.post("/v1/jobs", content=data, headers={"content-type": ctype}))
    _ok(api.post("/v1/images", content=data, headers={"content-type": ctype}))


@FUZZ
@given(job_id=st.text(alphabet=string.printable, max_size=40), wait=numbers)
def test_job_ids_and_waits_never_5xx(api: httpx.Client, job_id: str, wait: Any) -> None:
    path = "/v1/jobs/" + quote(job_id, safe="")
    _ok(api.get(path, params={"wait": str(wait)[:10]}))
    _ok(api.delete(path))
