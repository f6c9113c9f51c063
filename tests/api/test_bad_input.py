"""Bad input gets a clear 4xx JSON error before anything is queued."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import httpx
import pytest
import redis

from sam2fleet.shared.records import Keys
from sam2fleet.shared.settings import Settings
from tests.support import encode, scene

IMG = base64.b64encode(encode(scene(100, 80))).decode()


def _error(r: Any, status: int, type_: str, fragment: str = "") -> None:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["type"] == type_, body
    assert fragment.lower() in body["message"].lower(), body


def _no_jobs(rdb: redis.Redis, settings: Settings) -> None:
    assert list(rdb.scan_iter(f"{settings.key_prefix}:job:*")) == []
    assert rdb.llen(Keys(settings.key_prefix).queue(settings.model)) == 0


# invalid_prompt: prompts checked against the image and the limits; invalid_input: a
# request whose shape is wrong (its schema refuses it before the image is read).
@pytest.mark.parametrize(
    ("prompts", "type_", "fragment"),
    [
        ([{"points": [[150, 10]], "labels": [1]}], "invalid_prompt", "outside the 100x80 image"),
        ([{"points": [[-1, 10]], "labels": [1]}], "invalid_prompt", "outside"),
        ([{"box": [0, 0, 101, 50]}], "invalid_prompt", "outside"),
        ([{"box": [50, 50, 10, 60]}], "invalid_input", "x2 > x1"),
        ([{"box": [10, 10, 10, 60]}], "invalid_input", "x2 > x1"),
        ([{"points": [[1, 1], [2, 2]], "labels": [1]}], "invalid_input", "one per point"),
        ([{"points": [[1, 1]]}], "invalid_input", "one per point"),
        ([{"labels": [1]}], "invalid_input", "needs points, a box"),
        ([{"points": [[1, 2, 3]], "labels": [1]}], "invalid_input", "at most 2"),
        ([{"points": [[1, 1]], "labels": [2]}], "invalid_input", "labels"),
        ([{"points": [[1, 1]] * 6, "labels": [1] * 6}], "invalid_prompt", "at most 5"),
        ([{"box": [0, 0, 5, 5]}] * 5, "invalid_prompt", "at most 4 per job"),
        ([{"box": [0, 0, 5]}], "invalid_input", "box"),
        ([{"box": [0, 0, 5, 5], "color": "red"}], "invalid_input", "extra"),
        ([], "invalid_input", "needs at least one prompt"),
    ],
)
def test_bad_prompts_are_422(
    client: httpx.Client,
    rdb: redis.Redis,
    settings: Settings,
    prompts: list[dict[str, Any]],
    type_: str,
    fragment: str,
) -> None:
    r = client.post("/v1/jobs", json={"image": IMG, "prompts": prompts})
    _error(r, 422, type_, fragment)
    _no_jobs(rdb, settings)


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_coordinates_are_422(client: httpx.Client, bad: str) -> None:
    body = '{"image": "' + IMG + '", "prompts": [{"points": [[' + bad + ', 1]], "labels": [1]}]}'
    r = client.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    _error(r, 422, "invalid_input")


@pytest.mark.parametrize(
    ("body", "type_", "fragment"),
    [
        ({"image": IMG, "mode": "paint", "prompts": []}, "invalid_input", "mode"),
        (
            {"image": IMG, "model": "sam3", "prompts": [{"box": [0, 0, 5, 5]}]},
            "invalid_input",
            "unknown model",
        ),
        (
            {"image": IMG, "mode": "auto", "auto": {"points_per_side": 0}},
            "invalid_input",
            "points_per_side",
        ),
        (
            {"image": IMG, "mode": "auto", "auto": {"pred_iou_thresh": 1.5}},
            "invalid_input",
            "pred_iou_thresh",
        ),
        (
            {"image": IMG, "mode": "auto", "auto": {"crop_n_layers": 9}},
            "invalid_input",
            "crop_n_layers",
        ),
        (
            {"image": IMG, "mode": "auto", "prompts": [{"box": [0, 0, 5, 5]}]},
            "invalid_input",
            "takes no prompts",
        ),
        ({"prompts": [{"box": [0, 0, 5, 5]}]}, "invalid_input", "exactly one"),
        ({"image": "not base64!!", "prompts": [{"box": [0, 0, 5, 5]}]}, "invalid_input", "base64"),
        (
            {"image": IMG, "prompts": [{"box": [0, 0, 5, 5]}], "output": {"format": "tiff"}},
            "invalid_input",
            "format",
        ),
    ],
)
def test_bad_requests_are_422(
    client: httpx.Client,
    rdb: redis.Redis,
    settings: Settings,
    body: dict[str, Any],
    type_: str,
    fragment: str,
) -> None:
    r = client.post("/v1/jobs", json=body)
    _error(r, 422, type_, fragment)
    _no_jobs(rdb, settings)


def test_not_json_is_400_or_422(client: httpx.Client) -> None:
    r = client.post("/v1/jobs", content=b"{nope", headers={"content-type": "application/json"})
    _error(r, 422, "invalid_input", "json")
    r = client.post("/v1/jobs", content=b"", headers={"content-type": "application/json"})
    _error(r, 400, "bad_request", "empty")


def test_unsupported_content_type_is_415(client: httpx.Client) -> None:
    r = client.post("/v1/jobs", content=b"x", headers={"content-type": "text/plain"})
    _error(r, 415, "unsupported_media_type", "text/plain")


@pytest.mark.parametrize(
    ("data", "status", "type_"),
    [
        (b"", 422, "invalid_image"),
        (b"hello, not an image", 415, "unsupported_image"),
        (encode(scene(100, 80))[:200], 422, "invalid_image"),  # truncated PNG
        (encode(scene(100, 80), "JPEG")[:400], 422, "invalid_image"),  # truncated JPEG
    ],
)
def test_broken_images(
    client: httpx.Client, rdb: redis.Redis, settings: Settings, data: bytes, status: int, type_: str
) -> None:
    b64 = base64.b64encode(data).decode()
    r = client.post("/v1/jobs", json={"image": b64, "prompts": [{"box": [0, 0, 5, 5]}]})
    _error(r, status, type_)
    _no_jobs(rdb, settings)
    assert list(rdb.scan_iter(f"{settings.key_prefix}:image:*")) == []


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that declares a huge size: a decompression bomb's header."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_413_before_decoding(client: httpx.Client) -> None:
    bomb = base64.b64encode(_png_header_only(60000, 60000)).decode()
    r = client.post("/v1/jobs", json={"image": bomb, "prompts": [{"box": [0, 0, 5, 5]}]})
    _error(r, 413, "image_too_large", "pixels")


def test_pixel_cap_is_a_setting(client: httpx.Client) -> None:
    over = base64.b64encode(_png_header_only(2001, 2000)).decode()  # 4,002,000 > 4,000,000
    r = client.post("/v1/jobs", json={"image": over, "prompts": [{"box": [0, 0, 5, 5]}]})
    _error(r, 413, "image_too_large", "4000000")


def test_oversized_base64_is_413(client: httpx.Client) -> None:
    big = base64.b64encode(b"\0" * 1_100_000).decode()  # over max_image_bytes, under the body cap
    r = client.post("/v1/jobs", json={"image": big, "prompts": [{"box": [0, 0, 5, 5]}]})
    _error(r, 413, "image_too_large")


def test_oversized_body_is_413_with_and_without_content_length(client: httpx.Client) -> None:
    body = b"x" * 2_100_000
    r = client.post("/v1/jobs", content=body, headers={"content-type": "application/json"})
    _error(r, 413, "payload_too_large")

    def chunks():  # no Content-Length: the body is counted as it arrives
        for _ in range(30):
            yield b"y" * 100_000

    r = client.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    _error(r, 413, "payload_too_large")


def test_valid_job_without_a_worker_is_503_and_leaves_nothing(
    client: httpx.Client, rdb: redis.Redis, settings: Settings
) -> None:
    r = client.post("/v1/jobs", json={"image": IMG, "prompts": [{"box": [0, 0, 5, 5]}]})
    _error(r, 503, "no_worker_ready")
    assert int(r.headers["retry-after"]) > 0
    _no_jobs(rdb, settings)


def test_multipart_without_image_part_is_422(client: httpx.Client) -> None:
    r = client.post(
        "/v1/jobs", data={"job": '{"mode": "auto"}'}, files={"other": ("x.png", b"123")}
    )
    _error(r, 422, "invalid_input", "image")


def test_a_wrong_method_is_405_naming_every_method_of_the_path(client: httpx.Client) -> None:
    r = client.request("PUT", "/v1/jobs/" + "0" * 32)
    _error(r, 405, "method_not_allowed")
    # Two routes serve this path: the answer names both, not only the first.
    assert r.headers["allow"] == "DELETE, GET"
    assert client.request("ZZZA", "/livez").headers["allow"] == "GET"
