"""`sam2fleet enqueue`, `sam2fleet overlay`, the client and `POST /segment` against a real
fleet: real Redis, a real worker process (SAM 2 tiny, random weights, 256 px), real HTTP.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sam2fleet.cli import main as cli
from sam2fleet.client import ApiError, Client
from tests.support import ROOT, Fleet, RedisServer, encode, scene

SIZES = [(64, 48), (96, 96), (160, 120), (120, 160), (80, 112), (144, 64), (100, 75)]
FORMATS = ["PNG", "JPEG", "WEBP", "PNG-L", "PNG-RGBA", "BMP"]
N_IMAGES = 54
# Automatic mode, made cheap and permissive: random weights rarely pass SAM's defaults.
AUTO = ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


def _write_image(path: Path, img: np.ndarray, fmt: str) -> Path:
    if fmt == "PNG-L":
        data = encode(Image.fromarray(img).convert("L"))
    elif fmt == "PNG-RGBA":
        data = encode(Image.fromarray(img).convert("RGBA"))
    elif fmt == "BMP":
        data = encode(img, "BMP")  # not served: the client converts it to PNG
    else:
        data = encode(img, fmt, **({"quality": 90} if fmt != "PNG" else {}))
    path = path.with_suffix(
        {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp"}.get(fmt, ".png")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """54 small images of mixed sizes and formats, some in a sub-folder."""
    root = tmp_path_factory.mktemp("images")
    files: dict[str, tuple[int, int]] = {}
    for i in range(N_IMAGES):
        w, h = SIZES[i % len(SIZES)]
        sub = "batch2/" if i % 5 == 4 else ""
        p = _write_image(root / f"{sub}img{i:03d}", scene(w, h, seed=i), FORMATS[i % 6])
        files[p.relative_to(root).as_posix()] = (w, h)
    (root / "README.txt").write_text("not an image; enqueue ignores it")
    return {"root": root, "files": files}


def _job_keys(r: redis.Redis, fleet: Fleet) -> set[bytes]:
    prefix = fleet.env["SAM2FLEET_KEY_PREFIX"]
    return set(r.scan_iter(match=f"{prefix}:job:*", count=1000))


def _events(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "state.jsonl").read_text().splitlines()]


def _check_against_api(fleet: Fleet, results: Path) -> COCO:
    """results.json loads with pycocotools, and every mask is the job's own result."""
    coco = COCO(str(results))
    by_job: dict[str, list[dict[str, Any]]] = {}
    for ann in coco.dataset["annotations"]:
        by_job.setdefault(ann["job_id"], []).append(ann)
    with Client(fleet.base_url) as client:
        for img in coco.dataset["images"]:
            job = client.get(img["job_id"])
            assert job.succeeded and job.result is not None
            assert (job.result.image.width, job.result.image.height) == (
                img["width"],
                img["height"],
            )
            anns = by_job.get(img["job_id"], [])
            assert [a["segmentation"]["counts"] for a in anns] == [
                m.segmentation["counts"] for m in job.result.masks
            ]
            assert [a["score"] for a in anns] == [m.predicted_iou for m in job.result.masks]
            assert all(a["image_id"] == img["id"] for a in anns)
    for ann_id in coco.getAnnIds()[:20]:
        m = coco.annToMask(coco.loadAnns(ann_id)[0])
        assert m.sum() == coco.anns[ann_id]["area"]
    return coco


def test_folder_run_interrupted_and_resumed_does_each_image_once(
    fleet: Fleet,
    images: dict[str, Any],
    redis_server: RedisServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    r = redis.Redis.from_url(redis_server.url)
    before = _job_keys(r, fleet)
    cmd = [
        sys.executable,
        "-m",
        "sam2fleet.cli",
        "enqueue",
        str(images["root"]),
        "--out",
        str(out),
        "--server",
        fleet.base_url,
        "--concurrency",
        "4",
        *AUTO,
    ]
    env = dict(os.environ)
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:  # Ctrl-C once 12 images are done, as a person would
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = out / "state.jsonl"
            if state.exists() and state.read_text().count('"event": "done"') >= 12:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (stdout, stderr)
    assert "interrupted" in stdout and "stopping" in stderr
    done_first = {e["key"] for e in _events(out) if e["event"] == "done"}
    assert 12 <= len(done_first) < N_IMAGES
    # What was finished before the Ctrl-C is already in the COCO output.
    partial = json.loads((out / "results.json").read_text())
    assert {i["file_name"] for i in partial["images"]} == done_first

    rerun = ["enqueue", str(images["root"]), "--out", str(out), "--server", fleet.base_url]
    rerun += ["--no-progress", *AUTO]
    assert cli(rerun) == 0
    summary = capsys.readouterr().out
    assert f"{N_IMAGES} images: {N_IMAGES - len(done_first)} done, 0 failed" in summary
    assert f"{len(done_first)} already done before" in summary

    events = _events(out)
    done = Counter(e["key"] for e in events if e["event"] == "done")
    submitted = Counter(e["key"] for e in events if e["event"] == "submitted")
    assert set(done) == set(images["files"]) and set(done.values()) == {1}
    assert set(submitted.values()) == {1}  # interrupted jobs were collected, not resubmitted
    new_jobs = _job_keys(r, fleet) - before
    assert len(new_jobs) == N_IMAGES  # the fleet ran exactly one job per image
    assert {e["job_id"] for e in events if e["event"] == "done"} == {
        k.decode().rsplit(":", 1)[1] for k in new_jobs
    }

    coco = _check_against_api(fleet, out / "results.json")
    assert sorted(i["file_name"] for i in coco.dataset["images"]) == sorted(images["files"])
    for img in coco.dataset["images"]:
        assert (img["width"], img["height"]) == images["files"][img["file_name"]]
    assert len(coco.dataset["annotations"]) > 0
    assert all("point_coords" in a for a in coco.dataset["annotations"])

    # A third run has nothing left to do and submits nothing.
    assert cli(rerun) == 0
    assert f"0 done, 0 failed, 0 skipped, {N_IMAGES} already done" in capsys.readouterr().out
    assert len(_job_keys(r, fleet) - before) == N_IMAGES


def test_manifest_with_prompts_categories_failures_and_pictures(
    fleet: Fleet, images: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = images["root"]
    names = sorted(images["files"])[:10]
    lines = []
    for i, name in enumerate(names):
        w, h = images["files"][name]
        lines.append(
            {
                "image": str(root / name),
                "prompts": [
                    {"points": [[w // 2, h // 2], [2, 2]], "labels": [1, 0], "category": "blob"},
                    {"box": [w // 8, h // 8, w - w // 8, h - h // 8], "category": "frame"},
                ],
            }
            if i % 2 == 0
            else {"image": str(root / name), "boxes": [[1, 1, w // 2, h // 2]]}
        )
    lines.append(
        {"image": str(root / names[0]), "id": "outside", "prompts": [{"box": [0, 0, 5000, 5000]}]}
    )  # the gateway refuses this one
    manifest = tmp_path / "prompts.jsonl"
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    out = tmp_path / "out"
    argv = [
        "enqueue",
        str(manifest),
        "--out",
        str(out),
        "--server",
        fleet.base_url,
        "--no-progress",
        "--png-masks",
        "--overlays",
    ]
    assert cli(argv) == 1  # one image failed
    summary = capsys.readouterr().out
    assert "11 images: 10 done, 1 failed" in summary
    assert "outside: invalid_prompt:" in summary and "outside the" in summary

    coco = _check_against_api(fleet, out / "results.json")
    cats = {c["name"]: c["id"] for c in coco.dataset["categories"]}
    assert {"blob", "frame", "object"} <= set(cats)
    anns = coco.dataset["annotations"]
    assert len(anns) == 5 * 2 + 5 * 1  # one mask per prompt (no --multimask)
    for a in anns:
        assert "prompt" in a and "prompt_index" in a and a["candidate"] == 0
    blob = [a for a in anns if a["category_id"] == cats["blob"]]
    assert len(blob) == 5 and all(a["prompt"]["labels"] == [1, 0] for a in blob)
    assert {a["category_id"] for a in anns if "box" in a["prompt"] and a["prompt_index"] == 0} == {
        cats["object"]
    }

    job_files = sorted((out / "jobs").glob("*.json"))
    assert len(job_files) == 10
    first = json.loads(job_files[0].read_text())
    w, h = first["job"]["result"]["image"]["width"], first["job"]["result"]["image"]["height"]
    masks = sorted((out / "masks" / job_files[0].stem).glob("*.png"))
    assert len(masks) == len(first["job"]["result"]["masks"])
    with Image.open(masks[0]) as m:
        arr = np.asarray(m)
        assert arr.shape == (h, w) and set(np.unique(arr)) <= {0, 255}
        expected = first["job"]["result"]["masks"][0]["segmentation"]
        rle = {"size": expected["size"], "counts": expected["counts"].encode()}
        assert ((arr > 0) == mask_utils.decode(rle).astype(bool)).all()
    with Image.open(out / "overlays" / f"{job_files[0].stem}.png") as pic:
        assert pic.size == (w, h)

    # Re-run: the 10 done are skipped, the failed one is retried (under a new key).
    assert cli(argv) == 1
    assert "1 failed, 0 skipped, 10 already done" in capsys.readouterr().out
    failed = [e for e in _events(out) if e["event"] == "failed"]
    assert len(failed) == 2 and failed[0]["key"] == failed[1]["key"] == "outside"

    # The overlay command draws one job from its record, or by id from a run folder.
    pic_path = tmp_path / "one.png"
    assert cli(["overlay", str(job_files[0]), "--out", str(pic_path)]) == 0
    job_id = first["job"]["id"]
    assert (
        cli(
            [
                "overlay",
                job_id,
                "--run",
                str(out),
                "--out",
                str(tmp_path / "two.png"),
                "--min-size",
                "300",
            ]
        )
        == 0
    )
    with Image.open(pic_path) as a, Image.open(tmp_path / "two.png") as b:
        assert a.size == (w, h) and max(b.size) >= 300
    # By id from the server: the API keeps no image, so --image is needed.
    assert (
        cli(["overlay", job_id, "--server", fleet.base_url, "--out", str(tmp_path / "three.png")])
        == 2
    )
    assert (
        cli(
            [
                "overlay",
                job_id,
                "--server",
                fleet.base_url,
                "--image",
                first["item"]["path"],
                "--out",
                str(tmp_path / "three.png"),
            ]
        )
        == 0
    )


def test_coco_boxes_become_prompts_and_results_load_against_ground_truth(
    fleet: Fleet, images: dict[str, Any], tmp_path: Path
) -> None:
    root = images["root"]
    names = sorted(images["files"])[10:18]
    gt: dict[str, Any] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": 3, "name": "disc"}, {"id": 7, "name": "bg"}],
    }
    for k, name in enumerate(names):
        w, h = images["files"][name]
        gt["images"].append({"id": 100 + k, "file_name": name, "width": w, "height": h})
        for j, (cat, box) in enumerate(
            [(3, [4, 4, w // 2, h // 2]), (7, [w // 3, h // 3, w, h])]
        ):  # overruns: clamped
            x, y, bw, bh = box
            seg = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
            gt["annotations"].append(
                {
                    "id": 1000 + 10 * k + j,
                    "image_id": 100 + k,
                    "category_id": cat,
                    "bbox": box,
                    "area": bw * bh,
                    "iscrowd": 0,
                    "segmentation": seg,
                }
            )
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    out = tmp_path / "out"
    assert (
        cli(
            [
                "enqueue",
                str(gt_path),
                "--images-dir",
                str(root),
                "--out",
                str(out),
                "--server",
                fleet.base_url,
                "--no-progress",
                "--multimask",
            ]
        )
        == 0
    )
    coco = _check_against_api(fleet, out / "results.json")
    assert sorted(i["id"] for i in coco.dataset["images"]) == [100 + k for k in range(8)]
    anns = coco.dataset["annotations"]
    assert len(anns) == 8 * 2 * 3  # multimask: three candidates per box
    assert {a["source_annotation_id"] for a in anns} == {a["id"] for a in gt["annotations"]}
    for a in anns:
        src = next(g for g in gt["annotations"] if g["id"] == a["source_annotation_id"])
        assert a["category_id"] == src["category_id"]
        x1, y1, x2, y2 = a["prompt"]["box"]
        assert x2 <= coco.imgs[a["image_id"]]["width"]
    # The results list goes through pycocotools' own loading and evaluation.
    coco_gt = COCO(str(gt_path))
    coco_dt = coco_gt.loadRes(str(out / "detections.json"))
    assert len(coco_dt.anns) == len(anns)
    ev = COCOeval(coco_gt, coco_dt, "segm")
    ev.evaluate()
    ev.accumulate()
    assert ev.eval is not None


def test_client_submit_wait_cancel_and_masks(fleet: Fleet, images: dict[str, Any]) -> None:
    name = sorted(images["files"])[0]
    path = images["root"] / name
    w, h = images["files"][name]
    with Client(fleet.base_url) as c:
        info = c.upload(path)
        assert (info.width, info.height) == (w, h)
        job = c.segment(
            image_id=info.image_id,
            prompts=[{"box": [2, 2, w - 2, h - 2]}],
            multimask=False,
            timeout=60,
        )
        masks = c.masks(job.id)
        assert len(masks) == 1 and masks[0].shape == (h, w) and masks[0].dtype == bool
        assert (
            job.result is not None
            and job.result.masks[0].decode().sum() == job.result.masks[0].area
        )
        # Submitting the same thing twice with one idempotency key makes one job.
        a = c.submit(
            path, prompts=[{"points": [[5, 5]], "labels": [1]}], idempotency_key="same-key-1"
        )
        b = c.submit(
            path, prompts=[{"points": [[5, 5]], "labels": [1]}], idempotency_key="same-key-1"
        )
        assert b.id == a.id
        try:
            cancelled = c.cancel(a.id)
        except ApiError as exc:  # it finished first: 409 conflict, and it has ended
            assert (exc.status, exc.type) == (409, "conflict")
            assert c.get(a.id).status in ("succeeded", "failed")
        else:
            assert cancelled.status == "cancelled" and c.get(a.id).status == "cancelled"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_compat_segment_route(fleet: Fleet, images: dict[str, Any]) -> None:
    name = sorted(images["files"])[1]
    path = images["root"] / name
    w, h = images["files"][name]
    url = f"{fleet.base_url}/segment"
    r = httpx.post(
        url,
        json={
            "image_base64": _b64(path),
            "prompt_type": "point",
            "points": [[w // 2, h // 2]],
            "confidence_threshold": 0.0,
        },
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["num_masks"] == len(body["masks_base64"]) == len(body["scores"]) == 3
    assert body["scores"] == sorted(body["scores"], reverse=True)
    assert body["inference_time_ms"] > 0 and body["total_time_ms"] >= body["inference_time_ms"]
    pngs = []
    for m in body["masks_base64"]:
        with Image.open(io.BytesIO(base64.b64decode(m))) as img:
            assert img.format == "PNG" and img.size == (w, h)
            pngs.append(np.asarray(img.convert("L")) > 0)
    # The same masks as the ordinary job API gives for the same prompt.
    with Client(fleet.base_url) as c:
        job = c.get(body["job_id"])
        direct = c.segment(
            path,
            prompts=[{"points": [[w // 2, h // 2]], "labels": [1]}],
            multimask=True,
            timeout=60,
        )
    assert job.status == "succeeded"
    assert direct.result is not None
    by_score = sorted(direct.result.masks, key=lambda m: -m.predicted_iou)
    assert [m.predicted_iou for m in by_score] == body["scores"]
    assert all((a == m.decode()).all() for a, m in zip(pngs, by_score, strict=True))

    r = httpx.post(
        url,
        json={
            "image_base64": "data:image/png;base64," + _b64(path),
            "prompt_type": "box",
            "boxes": [[1, 1, w // 2, h // 2], [w // 3, h // 3, w - 1, h - 1]],
        },
        timeout=60,
    )
    assert r.status_code == 200 and r.json()["num_masks"] == 2
    # confidence_threshold is the result filter: nothing from random weights reaches 1.0
    r = httpx.post(
        url,
        json={
            "image_base64": _b64(path),
            "prompt_type": "box",
            "boxes": [[1, 1, 20, 20]],
            "confidence_threshold": 1.0,
        },
        timeout=60,
    )
    assert r.status_code == 200 and r.json()["num_masks"] == 0
    r = httpx.post(
        url,
        json={"image_base64": _b64(path), "prompt_type": "auto", "points_per_side": 2},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    # Errors keep the project's shape.
    r = httpx.post(url, json={"image_base64": _b64(path), "prompt_type": "point"}, timeout=30)
    assert r.status_code == 422 and r.json()["error"]["type"] == "invalid_prompt"
    r = httpx.post(
        url,
        json={"image_base64": _b64(path), "prompt_type": "box", "boxes": [[0, 0, 9999, 10]]},
        timeout=30,
    )
    assert r.status_code == 422 and r.json()["error"]["type"] == "invalid_prompt"
    r = httpx.post(
        url, json={"image_base64": "bm90IGFuIGltYWdl", "prompt_type": "auto"}, timeout=30
    )
    assert r.status_code == 415 and r.json()["error"]["type"] == "unsupported_image"
    r = httpx.post(url, json={"prompt_type": "auto"}, timeout=30)
    assert r.status_code == 422 and r.json()["error"]["type"] == "invalid_input"
    # A job that cannot finish in time: 504 timeout, and the job is cancelled.
    r = httpx.post(
        url,
        json={
            "image_base64": _b64(path),
            "prompt_type": "auto",
            "points_per_side": 8,
            "timeout_s": 0.001,
        },
        timeout=30,
    )
    assert r.status_code == 504, r.text
    err = r.json()["error"]
    assert err["type"] == "timeout" and "cancelled" in err["message"]
