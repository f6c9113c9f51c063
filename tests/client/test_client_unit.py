"""The client without a server: retries, headers, decoding, sources and the journal."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from sam2fleet.client import (
    ApiError,
    AsyncClient,
    Client,
    Mask,
    RetryPolicy,
    WaitTimeout,
    decode_segmentation,
)
from sam2fleet.enqueue.journal import Journal
from sam2fleet.enqueue.options import Options
from sam2fleet.enqueue.plan import content_hash, idempotency_key, job_spec
from sam2fleet.overlay import draw_overlay
from sam2fleet.sources import SourceError, load_source
from tests.support import encode, scene

JOB = {
    "id": "a" * 32,
    "status": "queued",
    "model": "sam2.1_hiera_tiny",
    "mode": "prompt",
    "image_id": "b" * 64,
    "created_at": 1.0,
}


def _error(status: int, type_: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"type": type_, "message": "m"}}, headers=headers)


class Script:
    """A transport answering from a list, recording every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _client(script: Script, sleeps: list[float], **kw: object) -> Client:
    return Client(
        "http://fleet.test", transport=httpx.MockTransport(script), sleep=sleeps.append, **kw
    )  # type: ignore[arg-type]


def test_429_and_503_honour_retry_after_seconds_and_dates() -> None:
    when = email.utils.formatdate(time.time() + 3, usegmt=True)
    script = Script(
        _error(429, "rate_limited", {"Retry-After": "2"}),
        _error(503, "no_worker_ready", {"Retry-After": when}),
        httpx.Response(202, json=JOB),
    )
    sleeps: list[float] = []
    with _client(script, sleeps) as c:
        job = c.submit(b"png", prompts=[{"box": [0, 0, 4, 4]}], idempotency_key="k1")
    assert job.id == JOB["id"] and job.status == "queued"
    assert sleeps[0] == 2.0 and 1.0 <= sleeps[1] <= 3.0
    # Every attempt of one submit carries the same idempotency key.
    assert {r.headers["Idempotency-Key"] for r in script.requests} == {"k1"}


def test_connection_errors_back_off_then_give_up() -> None:
    boom = httpx.ConnectError("refused")
    script = Script(boom, boom, boom, boom)
    sleeps: list[float] = []
    with (
        _client(script, sleeps, retry=RetryPolicy(max_retries=3, backoff_s=1.0)) as c,
        pytest.raises(httpx.ConnectError),
    ):
        c.get("x")
    assert len(sleeps) == 3
    for attempt, delay in enumerate(sleeps):  # exponential with jitter in [50 %, 100 %]
        assert 0.5 * 2**attempt <= delay <= 2**attempt


def test_final_errors_are_typed_and_not_retried() -> None:
    script = Script(_error(422, "invalid_prompt"))
    sleeps: list[float] = []
    with _client(script, sleeps) as c, pytest.raises(ApiError) as err:
        c.submit(b"png", prompts=[{"box": [0, 0, 4, 4]}])
    assert err.value.status == 422 and err.value.type == "invalid_prompt" and sleeps == []
    # A submit without a caller's key still gets one, so its retries are safe.
    assert len(script.requests[0].headers["Idempotency-Key"]) >= 16


def test_api_key_from_argument_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script(httpx.Response(200, json=[]), httpx.Response(200, json=[]))
    with _client(script, [], api_key="s3cret") as c:
        c.models()
    monkeypatch.setenv("SAM2FLEET_API_KEY", "from-env")
    monkeypatch.setenv("SAM2FLEET_SERVER", "http://other.test:9000")
    c2 = Client(transport=httpx.MockTransport(script))
    assert c2.server == "http://other.test:9000"
    c2.models()
    c2.close()
    assert script.requests[0].headers["Authorization"] == "Bearer s3cret"
    assert script.requests[1].headers["Authorization"] == "Bearer from-env"


def test_wait_long_polls_until_the_job_ends_or_times_out() -> None:
    running = {**JOB, "status": "running"}
    done = {
        **JOB,
        "status": "succeeded",
        "result": {
            "image": {"image_id": "b" * 64, "width": 4, "height": 3},
            "model": {"name": "m", "checkpoint_sha256": "c", "weights": "random"},
            "masks": [],
            "timings": {},
            "notes": [],
        },
    }
    script = Script(httpx.Response(200, json=running), httpx.Response(200, json=done))
    with _client(script, []) as c:
        job = c.wait(JOB["id"], poll_s=5)
    assert job.succeeded and job.result is not None and job.result.image.width == 4
    assert [r.url.params["wait"] for r in script.requests] == ["5", "5"]
    script = Script(*[httpx.Response(200, json=running)] * 10_000)
    with _client(script, []) as c, pytest.raises(WaitTimeout):
        c.wait(JOB["id"], timeout=0.05, poll_s=0.01)


def test_async_client_retries_the_same_way() -> None:
    script = Script(
        _error(503, "unavailable", {"Retry-After": "1"}),
        httpx.Response(201, json={"image_id": "i", "width": 2, "height": 2}),
    )
    sleeps: list[float] = []

    async def sleep(s: float) -> None:
        sleeps.append(s)

    async def go() -> None:
        async with AsyncClient(
            "http://fleet.test", api_key="k", sleep=sleep, transport=httpx.MockTransport(script)
        ) as c:
            info = await c.upload(np.zeros((2, 2, 3), dtype=np.uint8))
            assert info.image_id == "i"

    asyncio.run(go())
    assert sleeps == [1.0]
    assert script.requests[-1].headers["Authorization"] == "Bearer k"


def test_masks_decode_from_rle_and_png() -> None:
    m = np.zeros((5, 7), dtype=bool)
    m[1:4, 2:6] = True
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    seg = {"size": [5, 7], "counts": rle["counts"].decode()}
    buf = io.BytesIO()
    Image.fromarray(m).convert("1").save(buf, format="PNG")
    assert (decode_segmentation(seg) == m).all()
    assert (
        decode_segmentation({"size": [5, 7], "png": base64.b64encode(buf.getvalue()).decode()}) == m
    ).all()
    mask = Mask.from_dict(
        {"segmentation": seg, "area": 12, "bbox": [2, 1, 4, 3], "predicted_iou": 0.5}
    )
    assert mask.size == (5, 7) and mask.decode().sum() == 12


# --- sources ----------------------------------------------------------------------------


def test_folder_glob_manifest_and_coco_sources(tmp_path: Path) -> None:
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    (tmp_path / "imgs" / "a.png").write_bytes(encode(scene(40, 30)))
    (tmp_path / "imgs" / "sub" / "b.jpg").write_bytes(encode(scene(30, 40), "JPEG"))
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    (tmp_path / "imgs" / ".hidden.png").write_bytes(b"x")
    folder = load_source(tmp_path / "imgs")
    assert [i.key for i in folder.items] == ["a.png", "sub/b.jpg"]
    assert [i.safe_name for i in folder.items] == ["a.png", "sub__b.jpg"]
    globbed = load_source(str(tmp_path / "imgs" / "**" / "*.jpg"))
    assert [i.key for i in globbed.items] == ["sub/b.jpg"]

    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "\n".join(
            [
                json.dumps(
                    {
                        "image": "imgs/a.png",
                        "prompts": [
                            {"points": [[5, 5]], "labels": [1], "category": "cat"},
                            {"box": [1, 1, 20, 20], "category_id": 9},
                        ],
                    }
                ),
                "# a comment",
                json.dumps({"image": "imgs/a.png", "boxes": [[0, 0, 10, 10]], "points": [[3, 3]]}),
                json.dumps({"image": "imgs/sub/b.jpg"}),
            ]
        )
    )
    src = load_source(manifest)
    assert [i.key for i in src.items] == ["imgs/a.png", "imgs/a.png#2", "imgs/sub/b.jpg"]
    first = src.items[0]
    assert first.prompts == [{"points": [[5, 5]], "labels": [1]}, {"box": [1, 1, 20, 20]}]
    assert [m["category_id"] for m in first.prompt_meta] == [10, 9]
    assert src.items[1].prompts == [{"box": [0, 0, 10, 10]}, {"points": [[3, 3]], "labels": [1]}]
    names = {c["name"]: c["id"] for c in src.categories}
    assert names["cat"] == 10 and names["object"] == src.default_category_id == 11
    assert job_spec(src.items[2], Options())["mode"] == "auto"  # type: ignore[index]
    assert isinstance(job_spec(src.items[2], Options(mode="prompt")), str)

    gt = tmp_path / "gt.json"
    gt.write_text(
        json.dumps(
            {
                "images": [{"id": 7, "file_name": "imgs/a.png", "width": 40, "height": 30}],
                "annotations": [
                    {"id": 70, "image_id": 7, "category_id": 3, "bbox": [30, 20, 15, 15]},
                    {"id": 71, "image_id": 7, "category_id": 3, "bbox": [1, 1, 0, 5]},
                ],
                "categories": [{"id": 3, "name": "disc"}],
            }
        )
    )
    coco_src = load_source(gt)
    item = coco_src.items[0]
    assert item.image_id == 7 and item.prompts == [{"box": [30.0, 20.0, 40.0, 30.0]}]
    assert item.prompt_meta == [{"category_id": 3, "source_annotation_id": 70}]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "a.png"}\n{oops\n')
    with pytest.raises(SourceError, match="bad.jsonl:2"):
        load_source(bad)


def test_idempotency_keys_are_stable_across_runs_and_change_per_attempt() -> None:
    spec = {"mode": "auto", "multimask": False}
    base = content_hash(spec, "ab" * 32)
    assert base == content_hash(dict(reversed(spec.items())), "ab" * 32)
    assert base != content_hash({**spec, "model": "x"}, "ab" * 32)
    assert idempotency_key(base, 0) == idempotency_key(base, 0) != idempotency_key(base, 1)


def test_journal_ignores_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "state.jsonl"
    j = Journal(path)
    j.append(event="submitted", key="a", base="b", job_id="j1")
    j.append(event="failed", key="a", base="b", job_id="j1", error={})
    j.append(event="submitted", key="a", base="b", job_id="j2")
    j.close()
    with path.open("a") as fh:
        fh.write('{"event": "done", "key": "a", "ba')  # killed mid-write
    j = Journal(path)
    done, pending, failed = j.state("a", "b")
    j.close()
    assert done is None and pending == "j2" and failed == 1


def test_overlay_draws_masks_outlines_and_prompts() -> None:
    img = Image.fromarray(np.full((60, 80, 3), 128, dtype=np.uint8))
    m = np.zeros((60, 80), dtype=bool)
    m[10:40, 20:60] = True
    out = draw_overlay(
        img,
        [m],
        scores=[0.9],
        prompts=[{"box": [20, 10, 60, 40], "points": [[40, 25], [5, 5]], "labels": [1, 0]}],
    )
    arr = np.asarray(out)
    assert out.size == (80, 60)
    assert (arr[30, 50] != 128).any()  # tinted inside the mask
    assert (arr[55, 75] == 128).all()  # untouched outside
    big = draw_overlay(img, [m], min_size=320)
    assert big.size == (320, 240)


def test_the_client_package_needs_no_server_dependencies() -> None:
    import subprocess
    import sys

    code = (
        "import sys, sam2fleet, sam2fleet.enqueue.command, sam2fleet.cli, sam2fleet.overlay, "
        "sam2fleet.coco; print(sorted(m for m in ('torch', 'celery', 'fastapi', 'redis') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
