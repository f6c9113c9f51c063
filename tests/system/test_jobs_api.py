"""Submitting and polling through real HTTP, a real worker and a real Redis."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from tests import oracle
from tests.conftest import SMALL
from tests.support import Fleet, encode, scene
from tests.system.client import b64, run, submit, wait

POINT = [{"points": [[60, 50]], "labels": [1]}]


def test_result_carries_the_contract_fields(fleet: Fleet) -> None:
    image = scene(200, 150, seed=1)
    job = run(fleet.base_url, {"image": b64(encode(image)), "prompts": POINT})
    result = job["result"]
    assert result["image"]["width"] == 200 and result["image"]["height"] == 150
    assert result["image"]["image_id"] == job["image_id"]
    assert result["model"]["name"] == "sam2.1_hiera_tiny"
    assert len(result["model"]["checkpoint_sha256"]) == 64
    assert result["model"]["weights"] == "random"  # the test checkpoint is marked random
    assert result["model"]["precision"] == "fp32"  # a CPU worker under precision=auto
    assert set(result["timings"]) == {
        "queue_s",
        "decode_s",
        "embed_s",
        "predict_s",
        "encode_s",
        "embedding_cache_hit",
        "encoder_batch_size",
    }
    assert result["timings"]["embed_s"] > 0
    assert result["timings"]["encoder_batch_size"] == 1  # nothing else was waiting
    assert result["timings"]["embedding_cache_hit"] is False  # a fresh image
    assert job["attempts"] == 1 and job["started_at"] >= job["created_at"]
    for m in result["masks"]:
        rle = {"size": m["segmentation"]["size"], "counts": m["segmentation"]["counts"].encode()}
        decoded = mask_utils.decode(rle)
        assert decoded.shape == (150, 200)
        assert int(decoded.sum()) == m["area"]
        assert m["bbox"] == [float(v) for v in mask_utils.toBbox(rle)]
        assert 0.0 <= m["stability_score"] <= 1.0
    ious = [m["predicted_iou"] for m in result["masks"]]
    assert ious == sorted(ious, reverse=True)


def test_multipart_upload_runs_the_same_job(fleet: Fleet, tiny_checkpoint: Path) -> None:
    image = scene(180, 120, seed=2)
    data = encode(image)
    r = httpx.post(
        f"{fleet.base_url}/v1/jobs",
        files={"image": ("x.png", data, "image/png")},
        data={"job": '{"prompts": [{"box": [20, 20, 150, 100]}], "multimask": false}'},
        timeout=30,
    )
    assert r.status_code == 202, r.text
    job = wait(fleet.base_url, r.json()["id"])
    direct = oracle.predict(tiny_checkpoint, SMALL, image, [{"box": [20, 20, 150, 100]}], False)
    assert [m["segmentation"]["counts"] for m in job["result"]["masks"]] == [direct[0][0][0]]


def test_uploaded_image_is_reused_by_id(fleet: Fleet) -> None:
    data = encode(scene(160, 160, seed=4))
    up = httpx.post(f"{fleet.base_url}/v1/images", files={"image": ("a.png", data)}, timeout=30)
    assert up.status_code == 201, up.text
    info = up.json()
    assert info == {"image_id": info["image_id"], "width": 160, "height": 160, "format": "PNG"}
    raw = httpx.post(
        f"{fleet.base_url}/v1/images",
        content=data,
        headers={"content-type": "image/png"},
        timeout=30,
    )
    assert raw.json()["image_id"] == info["image_id"]  # content-addressed: stored once
    jobs = [run(fleet.base_url, {"image_id": info["image_id"], "prompts": POINT}) for _ in range(2)]
    assert jobs[0]["result"]["masks"] == jobs[1]["result"]["masks"]
    unknown = httpx.post(f"{fleet.base_url}/v1/jobs", json={"image_id": "0" * 64, "prompts": POINT})
    assert unknown.status_code == 422 and "unknown or expired" in unknown.text


def test_png_output_decodes_to_the_rle_mask(fleet: Fleet) -> None:
    data = b64(encode(scene(150, 100, seed=5)))
    rle_job = run(fleet.base_url, {"image": data, "prompts": POINT})
    png_job = run(fleet.base_url, {"image": data, "prompts": POINT, "output": {"format": "png"}})
    for rle_m, png_m in zip(rle_job["result"]["masks"], png_job["result"]["masks"], strict=True):
        png = np.asarray(Image.open(io.BytesIO(base64.b64decode(png_m["segmentation"]["png"]))))
        rle = {
            "size": rle_m["segmentation"]["size"],
            "counts": rle_m["segmentation"]["counts"].encode(),
        }
        assert np.array_equal(png.astype(bool), mask_utils.decode(rle).astype(bool))
        assert png_m["area"] == rle_m["area"]


def test_min_score_filters_masks(fleet: Fleet) -> None:
    data = b64(encode(scene(150, 100, seed=5)))
    full = run(fleet.base_url, {"image": data, "prompts": POINT})["result"]["masks"]
    cut = sorted(m["predicted_iou"] for m in full)[1]
    kept = run(fleet.base_url, {"image": data, "prompts": POINT, "output": {"min_score": cut}})[
        "result"
    ]["masks"]
    assert [m["predicted_iou"] for m in kept] == [
        m["predicted_iou"] for m in full if m["predicted_iou"] >= cut
    ]
    assert len(kept) < len(full)


def test_long_poll_returns_as_soon_as_the_job_ends(fleet: Fleet) -> None:
    job = submit(fleet.base_url, {"image": b64(encode(scene(120, 90, seed=6))), "prompts": POINT})
    started = time.monotonic()
    done = wait(fleet.base_url, job["id"], timeout=60)
    assert done["status"] == "succeeded"
    assert time.monotonic() - started < 30  # woke on the finish, not at the 60 s limit
    short = httpx.get(f"{fleet.base_url}/v1/jobs/{job['id']}", params={"wait": 0}).json()
    assert short["status"] == "succeeded"


def test_unknown_job_is_404_and_finished_job_cannot_be_cancelled(fleet: Fleet) -> None:
    assert httpx.get(f"{fleet.base_url}/v1/jobs/nope").status_code == 404
    assert httpx.delete(f"{fleet.base_url}/v1/jobs/nope").status_code == 404
    job = run(fleet.base_url, {"image": b64(encode(scene(100, 80))), "prompts": POINT})
    r = httpx.delete(f"{fleet.base_url}/v1/jobs/{job['id']}")
    assert r.status_code == 409 and r.json()["error"]["type"] == "conflict"


def test_models_and_readiness_report_the_worker(fleet: Fleet) -> None:
    models = {m["name"]: m for m in httpx.get(f"{fleet.base_url}/v1/models").json()}
    assert models["sam2.1_hiera_tiny"]["workers"] == 1
    assert models["sam2.1_hiera_tiny"]["default"] is True
    assert models["sam2.1_hiera_large"]["workers"] == 0
    ready = httpx.get(f"{fleet.base_url}/readyz").json()
    assert ready["status"] == "ok" and ready["workers"] == 1
    assert httpx.get(f"{fleet.base_url}/livez").json() == {"status": "ok"}
    r = httpx.post(
        f"{fleet.base_url}/v1/jobs",
        json={
            "image": b64(encode(scene(100, 80))),
            "prompts": POINT,
            "model": "sam2.1_hiera_large",
        },
    )
    assert r.status_code == 503 and r.headers["retry-after"]
    assert r.json()["error"]["type"] == "no_worker_ready"


def test_openapi_docs_are_served(fleet: Fleet) -> None:
    spec = httpx.get(f"{fleet.base_url}/openapi.json").json()
    assert "JobCreate" in spec["components"]["schemas"]
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/images", "/v1/models"} <= set(spec["paths"])
    assert httpx.get(f"{fleet.base_url}/docs").status_code == 200
