"""Test videos made with PyAV: solid shapes moving over a picture, in any codec and
container the fleet accepts, plus a zip of numbered frames."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import av
import numpy as np

from tests.support import encode, scene

# x265 prints its settings on stderr for every file it writes.
QUIET = {"libx265": {"x265-params": "log-level=error"}}


def moving_frames(n: int, width: int = 160, height: int = 120, seed: int = 5) -> list[np.ndarray]:
    """`n` frames: a red box moving right and a blue disc moving down over `scene`."""
    background = scene(width, height, seed=seed)
    yy, xx = np.mgrid[0:height, 0:width]
    out = []
    for i in range(n):
        img = background.copy()
        x = width // 8 + 2 * i
        img[height // 3 : height // 3 + height // 4, x : x + width // 5] = (235, 40, 30)
        cy, r = height // 5 + i, height // 8
        img[(xx - 3 * width // 4) ** 2 + (yy - cy) ** 2 < r * r] = (30, 60, 230)
        out.append(img)
    return out


def encode_video(
    frames: list[np.ndarray],
    codec: str = "libx264",
    container: str = "mp4",
    fps: int = 10,
    rotation: float | None = None,
    options: dict[str, str] | None = None,
) -> bytes:
    height, width = frames[0].shape[:2]
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream: Any = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {**QUIET.get(codec, {}), **(options or {})}
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def decode_video(data: bytes) -> list[np.ndarray]:
    """Every frame as PyAV gives it (RGB), independently of the fleet's reader."""
    with av.open(io.BytesIO(data)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def frames_zip(frames: list[np.ndarray], fmt: str = "PNG", names: str = "{:05d}") -> bytes:
    buf = io.BytesIO()
    suffix = ".png" if fmt == "PNG" else ".jpg"
    with zipfile.ZipFile(buf, "w") as archive:
        for i, img in enumerate(frames):
            archive.writestr(names.format(i) + suffix, encode(img, fmt))
    return buf.getvalue()
