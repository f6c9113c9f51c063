"""Typed results: the API's job record as frozen dataclasses.

They mirror the server's response schemas (`sam2fleet.shared.schemas`, which need
pydantic) field for field, under the names users know: `Job` is `JobPublic`, `Result`
is `JobResult` (an image job's; a video job's is `VideoResult`), `Mask` is
`MaskRecord`. tests/client/test_models_match_schemas.py fails when the server sends
a field the client does not read. A mask's `segmentation` stays the JSON object, the
COCO RLE that pycocotools decodes as is.
Reading is lenient (a status or field added by a newer server does not break an older
client) and `raw` keeps the answer as it came.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from sam2fleet.client.errors import JobFailed

TERMINAL = ("succeeded", "failed", "cancelled")


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True)
class ImageInfo:
    image_id: str
    width: int
    height: int
    format: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ImageInfo:
        return cls(d["image_id"], int(d["width"]), int(d["height"]), d.get("format"))


@dataclass(frozen=True)
class ModelStamp:
    """Which model made a result: name, checkpoint digest, real or random weights, precision."""

    name: str
    checkpoint_sha256: str
    weights: str
    precision: str = "fp32"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelStamp:
        return cls(d["name"], d["checkpoint_sha256"], d["weights"], d.get("precision", "fp32"))


@dataclass(frozen=True)
class Timings:
    """Seconds per stage on the worker; see docs/observability.md for each stage."""

    queue_s: float = 0.0
    decode_s: float = 0.0
    embed_s: float = 0.0
    predict_s: float = 0.0
    encode_s: float = 0.0
    embedding_cache_hit: bool | None = None
    encoder_batch_size: int | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Timings:
        return cls(
            queue_s=float(d.get("queue_s", 0.0)),
            decode_s=float(d.get("decode_s", 0.0)),
            embed_s=float(d.get("embed_s", 0.0)),
            predict_s=float(d.get("predict_s", 0.0)),
            encode_s=float(d.get("encode_s", 0.0)),
            embedding_cache_hit=d.get("embedding_cache_hit"),
            encoder_batch_size=_opt_int(d.get("encoder_batch_size")),
        )


@dataclass(frozen=True)
class ErrorBody:
    """Why a job failed: the same `type` and `message` as an error answer."""

    type: str
    message: str

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ErrorBody:
        return cls(str(d.get("type", "error")), str(d.get("message", "")))


@dataclass(frozen=True)
class Mask:
    segmentation: dict[str, Any]
    area: int
    bbox: list[float]
    predicted_iou: float
    stability_score: float | None = None
    prompt_index: int | None = None
    point_coords: list[list[float]] | None = None
    crop_box: list[float] | None = None
    # {"data", "shape", "dtype"} with output.logits: send it back as a prompt's
    # `mask_input={"logits": mask.logits}` to refine this mask.
    logits: dict[str, Any] | None = field(default=None, repr=False)
    mask_input: str | None = None  # "logits" or "job": refined from a previous mask

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Mask:
        return cls(
            dict(d["segmentation"]),
            int(d["area"]),
            [float(v) for v in d["bbox"]],
            float(d["predicted_iou"]),
            _opt_float(d.get("stability_score")),
            _opt_int(d.get("prompt_index")),
            d.get("point_coords"),
            d.get("crop_box"),
            d.get("logits"),
            d.get("mask_input"),
        )

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.segmentation["size"]
        return int(h), int(w)

    def decode(self) -> np.ndarray:
        """The mask as an HxW bool array (from COCO RLE, PNG or polygon output)."""
        return decode_segmentation(self.segmentation)


@dataclass(frozen=True)
class Result:
    image: ImageInfo
    model: ModelStamp
    masks: list[Mask]
    timings: Timings
    notes: list[str]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Result:
        return cls(
            ImageInfo.from_dict(d["image"]),
            ModelStamp.from_dict(d["model"]),
            [Mask.from_dict(m) for m in d["masks"]],
            Timings.from_dict(d.get("timings") or {}),
            list(d.get("notes") or []),
            dict(d),
        )

    def decode_masks(self) -> list[np.ndarray]:
        return [m.decode() for m in self.masks]


@dataclass(frozen=True)
class VideoInfo:
    """A stored video as `POST /v1/videos` answers it (sizes as displayed)."""

    video_id: str
    frames: int
    fps: float
    width: int
    height: int
    duration_s: float
    codec: str
    container: str
    rotation: int = 0
    bytes: int = 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VideoInfo:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass(frozen=True)
class ObjectSummary:
    """One tracked object over a finished video job."""

    obj_id: int
    frames_present: int
    first_frame: int | None = None
    last_frame: int | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ObjectSummary:
        return cls(
            int(d["obj_id"]),
            int(d.get("frames_present", 0)),
            _opt_int(d.get("first_frame")),
            _opt_int(d.get("last_frame")),
        )


@dataclass(frozen=True)
class VideoResult:
    """A video job's summary; its masks are read per frame (`Videos.frames`)."""

    video: VideoInfo
    model: ModelStamp
    frames: int
    objects: list[ObjectSummary]
    timings: dict[str, float]
    notes: list[str]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VideoResult:
        return cls(
            VideoInfo.from_dict(d["video"]),
            ModelStamp.from_dict(d["model"]),
            int(d.get("frames", 0)),
            [ObjectSummary.from_dict(o) for o in d.get("objects") or []],
            {k: float(v) for k, v in (d.get("timings") or {}).items()},
            list(d.get("notes") or []),
            dict(d),
        )


@dataclass(frozen=True)
class Progress:
    """A running video job: frame records written and to write."""

    frames_done: int
    frames_total: int

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Progress:
        return cls(int(d["frames_done"]), int(d["frames_total"]))


@dataclass(frozen=True)
class Job:
    id: str
    status: str
    model: str
    mode: str
    image_id: str | None
    video_id: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    progress: Progress | None
    result: Result | VideoResult | None
    error: ErrorBody | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Job:
        result, error, progress = d.get("result"), d.get("error"), d.get("progress")
        read: Result | VideoResult | None = None
        if result:
            kind = VideoResult if d["mode"] == "video" else Result
            read = kind.from_dict(result)
        return cls(
            d["id"],
            d["status"],
            d["model"],
            d["mode"],
            d.get("image_id"),
            d.get("video_id"),
            float(d["created_at"]),
            _opt_float(d.get("started_at")),
            _opt_float(d.get("finished_at")),
            int(d.get("attempts") or 0),
            Progress.from_dict(progress) if progress else None,
            read,
            ErrorBody.from_dict(error) if error else None,
            dict(d),
        )

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def result_or_raise(self) -> Result:
        """An image job's result; raises `JobFailed` unless it succeeded."""
        if self.status != "succeeded" or not isinstance(self.result, Result):
            raise JobFailed(self)
        return self.result


def decode_segmentation(seg: Mapping[str, Any]) -> np.ndarray:
    """An HxW bool array from a result's `segmentation`: COCO RLE, PNG or COCO polygons."""
    from pycocotools import mask as mask_utils

    height, width = (int(v) for v in seg["size"])
    if seg.get("counts") is not None:
        counts = seg["counts"]
        rle = {
            "size": [height, width],
            "counts": counts.encode() if isinstance(counts, str) else counts,
        }
        decoded: np.ndarray = mask_utils.decode(rle)
        return decoded.astype(bool)
    if seg.get("png") is not None:
        with Image.open(io.BytesIO(base64.b64decode(seg["png"]))) as img:
            return np.asarray(img.convert("L")) > 0
    if seg.get("polygons") is not None:
        # As every COCO reader does: fill each polygon (holes are spliced into their
        # outline), then take the union.
        if not seg["polygons"]:
            return np.zeros((height, width), dtype=bool)
        rles = mask_utils.frPyObjects([list(p) for p in seg["polygons"]], height, width)
        merged: np.ndarray = mask_utils.decode(mask_utils.merge(rles))
        return merged.astype(bool)
    raise ValueError("segmentation has none of `counts` (RLE), `png` and `polygons`")
