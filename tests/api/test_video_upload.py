"""`POST /v1/videos` against a real gateway and Redis: every accepted kind of file,
and a clear 4xx for each kind of bad one. No worker needed."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import av
import httpx
import numpy as np
import pytest
import redis

from sam2fleet.shared.settings import Settings
from tests.api.conftest import serve
from tests.support import RedisServer, encode
from tests.video_support import encode_video, frames_zip, moving_frames


@pytest.fixture
def video_settings(redis_server: RedisServer, prefix: str) -> Settings:
    return Settings(
        redis_url=redis_server.url,
        key_prefix=prefix,
        max_video_bytes=3_000_000,
        max_video_frames=40,
        max_video_pixels=400 * 300,
        max_image_bytes=1_000_000,
    )


@pytest.fixture
def api(video_settings: Settings) -> Iterator[httpx.Client]:
    with serve(video_settings) as c:
        yield c


def upload(api: httpx.Client, data: bytes, **params: Any) -> httpx.Response:
    return api.post("/v1/videos", content=data, params=params, timeout=30)


FRAMES = moving_frames(6, width=96, height=64)


@pytest.mark.parametrize(
    ("codec", "container", "want_codec", "want_container"),
    [
        ("libx264", "mp4", "h264", "mp4"),
        ("libx265", "mp4", "hevc", "mp4"),
        ("libsvtav1", "mp4", "av1", "mp4"),
        ("libx264", "mov", "h264", "mp4"),
        ("libvpx", "webm", "vp8", "matroska"),
        ("libvpx-vp9", "webm", "vp9", "matroska"),
        ("libx264", "matroska", "h264", "matroska"),
    ],
)
def test_accepted_containers_and_codecs(
    api: httpx.Client, codec: str, container: str, want_codec: str, want_container: str
) -> None:
    data = encode_video(FRAMES, codec, container, fps=12)
    r = upload(api, data)
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["frames"] == 6
    assert info["fps"] == pytest.approx(12.0)
    assert (info["width"], info["height"]) == (96, 64)
    assert info["duration_s"] == pytest.approx(0.5)
    assert (info["codec"], info["container"]) == (want_codec, want_container)
    assert info["bytes"] == len(data)
    # Content-addressed: the same bytes again are the same video.
    assert upload(api, data).json()["video_id"] == info["video_id"]
    assert api.get(f"/v1/videos/{info['video_id']}").json() == info


def test_multipart_upload_and_zip_of_frames(api: httpx.Client) -> None:
    for fmt, codec in (("PNG", "png"), ("JPEG", "jpeg")):
        data = frames_zip(FRAMES, fmt, names="frame_{:03d}")
        r = api.post("/v1/videos", files={"video": ("f.zip", data)}, params={"fps": 5})
        assert r.status_code == 201, r.text
        info = r.json()
        assert (info["frames"], info["fps"], info["codec"], info["container"]) == (
            6,
            5.0,
            codec,
            "zip",
        )
        assert (info["width"], info["height"]) == (96, 64)


def test_rotation_is_applied(api: httpx.Client) -> None:
    # A phone's portrait video: stored landscape, displayed turned 90 degrees clockwise.
    r = upload(api, encode_video(FRAMES, rotation=-90))
    assert r.status_code == 201, r.text
    assert (r.json()["width"], r.json()["height"], r.json()["rotation"]) == (64, 96, -90)


def test_video_is_stored_in_chunks_with_a_ttl(
    api: httpx.Client, rdb: redis.Redis, video_settings: Settings
) -> None:
    data = encode_video(moving_frames(3, width=96, height=64))
    info = upload(api, data).json()
    base = f"{video_settings.key_prefix}:video:anon:{info['video_id']}"
    assert rdb.get(f"{base}:0") == data  # one chunk: under 1 MiB
    assert 0 < rdb.ttl(base) <= video_settings.video_ttl_s
    assert 0 < rdb.ttl(f"{base}:0") <= video_settings.video_ttl_s


def _audio(video_stream: bool) -> bytes:
    """Silence; with a video stream that never gets a frame, if asked."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        if video_stream:
            video: Any = out.add_stream("libx264", rate=10)
            video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        stream: Any = out.add_stream("aac", rate=16000)
        for _ in range(5):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def _variable_rate() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream: Any = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 100)
        for img, pts in zip(FRAMES, [0, 10, 20, 60, 70, 120], strict=True):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 100)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def _zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buf.getvalue()


MP4 = encode_video(FRAMES)
FASTSTART = encode_video(moving_frames(30, 96, 64), options={"movflags": "faststart"})
PNG = encode(FRAMES[0])


@pytest.mark.parametrize(
    ("name", "data", "params", "status", "error_type", "says"),
    [
        ("empty", b"", {}, 422, "invalid_video", "empty"),
        ("not a video", b"hello, this is text " * 50, {}, 415, "unsupported_video", "not a"),
        ("an image", PNG, {}, 415, "unsupported_video", "not a"),
        (
            "truncated, index at the end",
            MP4[: len(MP4) * 2 // 3],
            {},
            422,
            "invalid_video",
            "truncated",
        ),
        (
            "truncated, index first",
            FASTSTART[: len(FASTSTART) // 2],
            {},
            422,
            "invalid_video",
            "truncated",
        ),
        ("audio only", _audio(video_stream=False), {}, 422, "invalid_video", "audio only"),
        ("zero frames", _audio(video_stream=True), {}, 422, "invalid_video", "no frames"),
        ("variable frame rate", _variable_rate(), {}, 422, "invalid_video", "variable frame"),
        (
            "too many frames",
            encode_video(moving_frames(41, 32, 32)),
            {},
            413,
            "video_too_large",
            "SAM2FLEET_MAX_VIDEO_FRAMES",
        ),
        (
            "too many pixels",
            encode_video(moving_frames(2, 480, 320)),
            {},
            413,
            "video_too_large",
            "SAM2FLEET_MAX_VIDEO_PIXELS",
        ),
        (
            "zip frames differ in size",
            _zip({"0.png": PNG, "1.png": encode(moving_frames(1, 64, 64)[0])}),
            {},
            422,
            "invalid_video",
            "differ in size",
        ),
        (
            "zip not numbered",
            _zip({"a.png": PNG, "b.png": PNG}),
            {},
            422,
            "invalid_video",
            "not numbered",
        ),
        (
            "zip of other files",
            _zip({"0.png": PNG, "notes.txt": b"hi"}),
            {},
            422,
            "invalid_video",
            "notes.txt",
        ),
        (
            "zip bomb",
            _zip({"0.png": b"\0" * 900_000}, zipfile.ZIP_DEFLATED),
            {},
            422,
            "invalid_video",
            "zip bomb",
        ),
        (
            "zip frame not an image",
            _zip({"0.png": b"\x89PNG\r\n nope"}),
            {},
            422,
            "invalid_video",
            "0.png",
        ),
        ("zip corrupt", _zip({"0.png": PNG, "1.png": PNG})[:-30], {}, 422, "invalid_video", "zip"),
        ("zip empty", _zip({}), {}, 422, "invalid_video", "no frames"),
        (
            "over the byte limit",
            b"\0" * 3_100_000,
            {},
            413,
            "payload_too_large",
            "SAM2FLEET_MAX_VIDEO_BYTES",
        ),
    ],
)
def test_bad_videos_get_a_clear_4xx(
    api: httpx.Client,
    name: str,
    data: bytes,
    params: dict[str, Any],
    status: int,
    error_type: str,
    says: str,
) -> None:
    r = upload(api, data, **params)
    assert r.status_code == status, (name, r.text)
    error = r.json()["error"]
    assert error["type"] == error_type, (name, error)
    assert says in error["message"], (name, error)


def test_over_the_byte_limit_without_content_length(api: httpx.Client) -> None:
    def body() -> Iterator[bytes]:
        for _ in range(40):
            yield b"\0" * 100_000

    r = api.post("/v1/videos", content=body())
    assert r.status_code == 413, r.text
    # The gateway's body cap or the upload's own count, whichever is reached first.
    assert r.json()["error"]["type"] in ("payload_too_large", "video_too_large")
    assert "SAM2FLEET_MAX_VIDEO_BYTES" in r.json()["error"]["message"]


def test_json_body_is_refused_and_unknown_video_is_404(api: httpx.Client) -> None:
    r = api.post("/v1/videos", json={"video": "AAAA"})
    assert r.status_code == 415
    assert r.json()["error"]["type"] == "unsupported_media_type"
    assert api.get("/v1/videos/" + "0" * 64).status_code == 404
