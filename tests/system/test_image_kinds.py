"""Every common kind of image is segmented as displayed; anything else is a clear 415."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests import oracle
from tests.conftest import SMALL
from tests.support import Fleet, encode, scene
from tests.system.client import b64, run

PROMPTS = [{"points": [[40, 30]], "labels": [1]}, {"box": [10, 10, 70, 50]}]


def _variants() -> dict[str, tuple[bytes, np.ndarray]]:
    """name -> (file bytes, the RGB pixels a viewer would show)."""
    rgb = scene(96, 64, seed=9)
    pil = Image.fromarray(rgb)
    out: dict[str, tuple[bytes, np.ndarray]] = {"png-rgb": (encode(rgb), rgb)}
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    out["png-rgba"] = (encode(rgba), rgb)
    grey = pil.convert("L")
    out["png-grey"] = (encode(grey), np.array(grey.convert("RGB")))
    pal = pil.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    out["png-palette"] = (encode(pal), np.array(pal.convert("RGB")))
    webp = encode(rgb, "WEBP", lossless=True)
    out["webp"] = (webp, np.array(Image.open(io.BytesIO(webp)).convert("RGB")))
    jpeg = encode(rgb, "JPEG", quality=95)
    out["jpeg"] = (jpeg, np.array(Image.open(io.BytesIO(jpeg)).convert("RGB")))
    return out


@pytest.mark.parametrize("kind", list(_variants()))
def test_image_kind_is_segmented_like_its_displayed_pixels(
    fleet: Fleet, tiny_checkpoint: Path, kind: str
) -> None:
    data, shown = _variants()[kind]
    job = run(fleet.base_url, {"image": b64(data), "prompts": PROMPTS, "multimask": False})
    assert job["result"]["image"]["width"] == 96 and job["result"]["image"]["height"] == 64
    direct = oracle.predict(tiny_checkpoint, SMALL, shown, PROMPTS, False)
    assert [m["segmentation"]["counts"] for m in job["result"]["masks"]] == [
        d[0][0] for d in direct
    ]


def test_exif_rotated_jpeg_uses_displayed_coordinates(fleet: Fleet, tiny_checkpoint: Path) -> None:
    stored = scene(96, 64, seed=10)  # stored landscape, displayed portrait (orientation 6)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    shown = np.array(
        Image.open(io.BytesIO(data)).convert("RGB").transpose(Image.Transpose.ROTATE_270)
    )
    assert shown.shape[:2] == (96, 64)
    prompts = [{"points": [[30, 80]], "labels": [1]}]  # y=80 only exists when displayed
    job = run(fleet.base_url, {"image": b64(data), "prompts": prompts, "multimask": False})
    assert (job["result"]["image"]["width"], job["result"]["image"]["height"]) == (64, 96)
    direct = oracle.predict(tiny_checkpoint, SMALL, shown, prompts, False)
    assert job["result"]["masks"][0]["segmentation"]["counts"] == direct[0][0][0]
    assert job["result"]["masks"][0]["segmentation"]["size"] == [96, 64]


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_formats_are_415(fleet: Fleet, fmt: str) -> None:
    data = encode(scene(32, 32), fmt)
    r = httpx.post(
        f"{fleet.base_url}/v1/jobs", json={"image": b64(data), "prompts": [{"box": [0, 0, 8, 8]}]}
    )
    assert r.status_code == 415
    assert r.json()["error"]["type"] == "unsupported_image" and fmt in r.json()["error"]["message"]
