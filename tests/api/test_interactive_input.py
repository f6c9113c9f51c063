"""Bad input in the interactive fields (polygon output, previous masks): a clear 4xx
before anything is queued."""

from __future__ import annotations

import base64
import dataclasses
import uuid
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from sam2fleet.api.auth import ANONYMOUS
from sam2fleet.shared.images import image_id_for
from sam2fleet.shared.records import JobRecord, Keys
from sam2fleet.shared.schemas import JobSpec, JobStatus, Prompt
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


# --- mask_input: the previous mask ---------------------------------------------------

SIDE = 256  # the logits' side for the default 1024 px model input
IMAGE_ID = image_id_for(base64.b64decode(IMG))


def logits(values: np.ndarray, dtype: str = "float16") -> dict[str, Any]:
    data = base64.b64encode(values.astype("<f2" if dtype == "float16" else "<f4").tobytes())
    return {"data": data.decode(), "shape": list(values.shape), "dtype": dtype}


GOOD = np.linspace(-20, 20, SIDE * SIDE, dtype=np.float32).reshape(SIDE, SIDE)


def prompt_with(mask_input: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"points": [[10, 10]], "labels": [1], "mask_input": mask_input}]


@pytest.mark.parametrize(
    ("mask_input", "fragment"),
    [
        ({"logits": logits(GOOD[:128, :128])}, "shape [128, 128]"),
        ({"logits": {**logits(GOOD), "shape": [256, 256, 1]}}, "shape"),
        ({"logits": {**logits(GOOD), "dtype": "int8"}}, "dtype"),
        ({"logits": {**logits(GOOD), "dtype": "float32"}}, "131072 bytes; [256, 256] float32"),
        ({"logits": {**logits(GOOD), "data": logits(GOOD)["data"][:-8]}}, "bytes"),
        ({"logits": {**logits(GOOD), "data": "!" * 100}}, "base64"),
        ({"logits": logits(np.where(GOOD > 0, np.nan, GOOD))}, "nan or infinite"),
        ({"logits": logits(np.where(GOOD > 19, np.inf, GOOD))}, "nan or infinite"),
        ({"logits": logits(GOOD), "job_id": "a" * 32}, "exactly one"),
        ({}, "exactly one"),
        ({"logits": logits(GOOD), "prompt_index": 1}, "go with job_id"),
        ({"job_id": "a" * 32, "candidate": 3}, "candidate"),
    ],
)
def test_bad_mask_inputs_are_422(
    client: httpx.Client,
    rdb: redis.Redis,
    settings: Settings,
    mask_input: dict[str, Any],
    fragment: str,
) -> None:
    r = client.post("/v1/jobs", json={"image": IMG, "prompts": prompt_with(mask_input)})
    _error(r, 422, "invalid_input", fragment)
    _no_jobs(rdb, settings)


def test_good_logits_pass_the_gateway(client: httpx.Client) -> None:
    # Valid up to the last check, which needs a worker: the logits were accepted.
    for dtype in ("float16", "float32"):
        body = {"image": IMG, "prompts": prompt_with({"logits": logits(GOOD, dtype)})}
        _error(client.post("/v1/jobs", json=body), 503, "no_worker_ready")


def _earlier_job(rdb: redis.Redis, settings: Settings, owner: str, **changes: Any) -> str:
    """A prompt job record as the gateway writes it, with `changes` to its fields."""
    spec = JobSpec(prompts=[Prompt(points=[[5.0, 5.0]], labels=[1])], multimask=False)
    record = JobRecord.new(uuid.uuid4().hex, spec, settings.model, IMAGE_ID, owner)
    record = dataclasses.replace(record, **{"status": JobStatus.succeeded, **changes})
    rdb.hset(Keys(settings.key_prefix).job(record.id), mapping=record.to_redis())
    return record.id


@pytest.mark.parametrize(
    ("changes", "mask_input", "status", "type_", "fragment"),
    [
        ({"owner": "someone-else"}, {}, 404, "not_found", "no job"),
        ({"image_id": "f" * 64}, {}, 422, "invalid_input", "was on image"),
        ({"mode": "auto"}, {}, 422, "invalid_input", "auto job"),
        ({"status": JobStatus.running}, {}, 409, "conflict", "is running"),
        ({}, {"prompt_index": 1}, 422, "invalid_input", "has 1 object"),
        ({}, {"candidate": 1}, 422, "invalid_input", "1 mask(s) per object"),
        ({}, None, 503, "no_worker_ready", ""),  # all good: on to the worker
    ],
)
def test_job_references_are_checked_before_queueing(
    client: httpx.Client,
    rdb: redis.Redis,
    settings: Settings,
    changes: dict[str, Any],
    mask_input: dict[str, Any] | None,
    status: int,
    type_: str,
    fragment: str,
) -> None:
    owner = changes.pop("owner", ANONYMOUS)
    job_id = _earlier_job(rdb, settings, owner, **changes)
    given = {"job_id": job_id, **(mask_input or {})}
    r = client.post("/v1/jobs", json={"image": IMG, "prompts": prompt_with(given)})
    _error(r, status, type_, fragment)
    assert rdb.llen(Keys(settings.key_prefix).queue(settings.model)) == 0


def test_unknown_job_reference_is_404(client: httpx.Client) -> None:
    body = {"image": IMG, "prompts": prompt_with({"job_id": "0" * 32})}
    _error(client.post("/v1/jobs", json=body), 404, "not_found", "no job")


def test_logits_output_is_for_prompt_mode(client: httpx.Client) -> None:
    body = {"image": IMG, "mode": "auto", "output": {"logits": True}}
    _error(client.post("/v1/jobs", json=body), 422, "invalid_input", "mode=prompt only")
