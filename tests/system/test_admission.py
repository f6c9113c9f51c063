"""Admission by predicted memory and the precision switch, through a real fleet
whose worker has a small memory budget and runs under bf16 autocast."""

from __future__ import annotations

import numpy as np

from tests.conftest import fleet_fixture
from tests.support import Fleet, encode, scene
from tests.system.client import b64, run, submit, wait

BUDGET = 100 * 2**20  # fits a small prompt job at 256 px, not 64 points per batch


small_budget = fleet_fixture(
    "adm", SAM2FLEET_GPU_MEMORY_BUDGET_BYTES=str(BUDGET), SAM2FLEET_PRECISION="bf16"
)


def test_an_automatic_job_over_budget_runs_with_fewer_points_per_batch(
    small_budget: Fleet,
) -> None:
    body = {
        "image": b64(encode(scene(256, 192, seed=3))),
        "mode": "auto",
        "auto": {
            "points_per_side": 8,
            "points_per_batch": 64,
            "pred_iou_thresh": 0.0,
            "stability_score_thresh": 0.0,
        },
    }
    job = run(small_budget.base_url, body)
    notes = job["result"]["notes"]
    assert any("points_per_batch lowered from 64 to 16" in n for n in notes), notes
    assert job["result"]["masks"]


def test_a_prompt_job_that_cannot_fit_is_refused_before_it_runs(small_budget: Fleet) -> None:
    big = np.zeros((2000, 3000, 3), dtype=np.uint8)  # flat: a small upload
    job = submit(
        small_budget.base_url,
        {"image": b64(encode(big)), "prompts": [{"points": [[10, 10]], "labels": [1]}]},
    )
    done = wait(small_budget.base_url, job["id"])
    assert done["status"] == "failed", done
    assert done["error"]["type"] == "input_too_large"
    assert "3000x2000" in done["error"]["message"]
    assert "smaller image" in done["error"]["message"]


def test_results_say_the_precision_the_worker_ran_at(small_budget: Fleet) -> None:
    body = {
        "image": b64(encode(scene(160, 120, seed=4))),
        "prompts": [{"points": [[50, 40]], "labels": [1]}],
    }
    job = run(small_budget.base_url, body)
    assert job["result"]["model"]["precision"] == "bf16"
    assert job["result"]["notes"] == []  # fits: nothing lowered
    assert all(m["area"] > 0 for m in job["result"]["masks"])
