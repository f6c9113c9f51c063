"""What the client sends: image bytes from whatever the caller holds, and job bodies."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict, Unpack

import numpy as np
from PIL import Image

ImageLike = bytes | bytearray | str | os.PathLike[str] | Image.Image | np.ndarray


class JobOptions(TypedDict, total=False):
    """The keyword arguments of `submit` (and `segment`) besides the image and prompts."""

    image_id: str | None  # instead of an image: the id of an uploaded one
    mode: str | None  # "prompt" or "auto"; default: prompt with prompts, else auto
    model: str | None
    multimask: bool | None
    auto: Mapping[str, Any] | None  # the automatic generator's knobs
    output: Mapping[str, Any] | None  # {"format": "rle" | "png", "min_score": ...}
    idempotency_key: str | None  # default: a fresh one per submit (its retries share it)


def image_bytes(image: ImageLike) -> bytes:
    """Bytes of an image file: raw bytes, a path, a PIL image or an HxW(x3/4) uint8 array."""
    if isinstance(image, bytes | bytearray):
        return bytes(image)
    if isinstance(image, str | os.PathLike):
        return Path(image).read_bytes()
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    raise TypeError(f"not an image: {type(image).__name__}")


def submit_body(
    image: ImageLike | None = None,
    *,
    prompts: Sequence[Mapping[str, Any]] | None = None,
    **options: Unpack[JobOptions],
) -> dict[str, Any]:
    """The JSON body of `POST /v1/jobs` (`idempotency_key` is a header, not read here)."""
    image_id = options.get("image_id")
    if (image is None) == (image_id is None):
        raise ValueError("give exactly one of image and image_id")
    body: dict[str, Any] = {"mode": options.get("mode") or ("prompt" if prompts else "auto")}
    if image is not None:
        body["image"] = base64.b64encode(image_bytes(image)).decode()
    else:
        body["image_id"] = image_id
    if body["mode"] == "prompt":
        body["prompts"] = [dict(p) for p in prompts or []]
    if options.get("model") is not None:
        body["model"] = options["model"]
    if options.get("multimask") is not None:
        body["multimask"] = options["multimask"]
    if auto := options.get("auto"):
        body["auto"] = dict(auto)
    if output := options.get("output"):
        body["output"] = dict(output)
    return body
