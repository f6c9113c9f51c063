"""Refinement with the previous mask: the fleet's three-click loop gives the same masks
as SAM2ImagePredictor.predict(mask_input=...) called in-process, whether the previous
mask travels as logits or is named by its job; a reference that is gone is a clear
error, never an answer that silently starts over."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests import oracle
from tests.conftest import SMALL
from tests.support import Fleet, encode, photo
from tests.system.client import b64, run, submit, wait

# Two objects refined together, three steps each: a click, a background click, a
# second foreground click; and a box, then a background and a foreground click in it.
OBJECT_A = [
    {"points": [[150, 120]], "labels": [1]},
    {"points": [[150, 120], [60, 40]], "labels": [1, 0]},
    {"points": [[150, 120], [60, 40], [200, 170]], "labels": [1, 0, 1]},
]
OBJECT_B = [
    {"box": [240, 60, 420, 260]},
    {"box": [240, 60, 420, 260], "points": [[300, 100]], "labels": [0]},
    {"box": [240, 60, 420, 260], "points": [[300, 100], [330, 200]], "labels": [0, 1]},
]


@pytest.fixture(scope="module")
def image_id(fleet: Fleet) -> str:
    r = httpx.post(f"{fleet.base_url}/v1/images", files={"image": encode(photo("chelsea"))})
    assert r.status_code == 201, r.text
    return str(r.json()["image_id"])


def grouped(job: dict[str, Any], n: int) -> list[list[tuple[str, float]]]:
    out: list[list[tuple[str, float]]] = [[] for _ in range(n)]
    for m in job["result"]["masks"]:
        out[m["prompt_index"]].append((m["segmentation"]["counts"], m["predicted_iou"]))
    return out


def assert_same(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert [c for c, _ in got] == [c for c, _ in want]
    assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)


def in_process(checkpoint: Path, *, half: bool, mask_inputs: bool = True) -> list[Any]:
    image = photo("chelsea")
    return [
        oracle.refine(checkpoint, SMALL, image, steps, half=half, mask_inputs=mask_inputs)
        for steps in (OBJECT_A, OBJECT_B)
    ]


def refine_through_fleet(fleet: Fleet, image_id: str, by_reference: bool) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    for step in range(3):
        prompts = [dict(OBJECT_A[step]), dict(OBJECT_B[step])]
        if jobs:
            for index, prompt in enumerate(prompts):
                if by_reference:
                    prompt["mask_input"] = {"job_id": jobs[-1]["id"], "prompt_index": index}
                else:
                    best = next(
                        m for m in jobs[-1]["result"]["masks"] if m["prompt_index"] == index
                    )
                    prompt["mask_input"] = {"logits": best["logits"]}
        body = {
            "image_id": image_id,
            "prompts": prompts,
            "multimask": step == 0,
            "output": {"logits": not by_reference},
        }
        jobs.append(run(fleet.base_url, body))
    return jobs


@pytest.mark.parametrize("by_reference", [True, False], ids=["job-reference", "sent-logits"])
def test_three_click_refinement_matches_sam2_image_predictor(
    fleet: Fleet, tiny_checkpoint: Path, image_id: str, by_reference: bool
) -> None:
    jobs = refine_through_fleet(fleet, image_id, by_reference)
    # By reference the worker feeds back its own float32 logits; sent logits travel
    # as float16, and the in-process loop rounds them the same way.
    direct = in_process(tiny_checkpoint, half=not by_reference)
    for step, job in enumerate(jobs):
        got = grouped(job, 2)
        for obj in range(2):
            assert_same(got[obj], direct[obj][step])
        sources = {m.get("mask_input") for m in job["result"]["masks"]}
        assert sources == ({None} if step == 0 else {"job" if by_reference else "logits"})
        assert all(job["result"]["timings"]["embedding_cache_hit"] for job in jobs[1:])
    # The previous mask changed the answer: without it SAM gives other masks, so the
    # equality above says the fleet really used it.
    fresh = in_process(tiny_checkpoint, half=False, mask_inputs=False)
    assert any(
        [c for c, _ in fresh[obj][step]] != [c for c, _ in direct[obj][step]]
        for obj in range(2)
        for step in (1, 2)
    )


def test_logits_output_is_float16_at_a_quarter_of_the_input_size(
    fleet: Fleet, image_id: str
) -> None:
    job = run(
        fleet.base_url,
        {"image_id": image_id, "prompts": [OBJECT_A[0]], "output": {"logits": True}},
    )
    masks = job["result"]["masks"]
    assert len(masks) == 3
    for m in masks:
        logits = m["logits"]
        assert logits["shape"] == [SMALL // 4, SMALL // 4] and logits["dtype"] == "float16"
        values = np.frombuffer(base64.b64decode(logits["data"]), dtype="<f2")
        assert values.size == (SMALL // 4) ** 2 and np.isfinite(values).all()
        assert values.min() < 0 < values.max()  # logits, not a 0/1 mask
    # Without the option the answer stays small.
    plain = run(fleet.base_url, {"image_id": image_id, "prompts": [OBJECT_A[0]]})
    assert all("logits" not in m for m in plain["result"]["masks"])


def test_a_reference_the_worker_no_longer_holds_fails_clearly(fleet: Fleet, image_id: str) -> None:
    first = run(fleet.base_url, {"image_id": image_id, "prompts": [OBJECT_A[0]]})
    # The worker keeps the logits of an image's last 16 jobs; 16 more push it out.
    for k in range(16):
        run(
            fleet.base_url,
            {"image_id": image_id, "prompts": [{"points": [[10 + k, 10]], "labels": [1]}]},
        )
    body = {
        "image_id": image_id,
        "prompts": [{**OBJECT_A[1], "mask_input": {"job_id": first["id"]}}],
        "multimask": False,
    }
    job = wait(fleet.base_url, submit(fleet.base_url, body)["id"])
    assert job["status"] == "failed"
    assert job["error"]["type"] == "mask_input_gone"
    assert first["id"] in job["error"]["message"] and "logits" in job["error"]["message"]
    # A reference to a job on another image is refused before queueing.
    other = b64(encode(photo("coffee")))
    r = httpx.post(
        f"{fleet.base_url}/v1/jobs",
        json={"image": other, "prompts": [{**OBJECT_A[1], "mask_input": {"job_id": first["id"]}}]},
    )
    assert r.status_code == 422 and "was on image" in r.json()["error"]["message"]
