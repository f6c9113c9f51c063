"""Request and response shapes shared by the gateway and the workers.

Field names of `MaskRecord` follow SAM's own automatic mask generator records so
SAM users recognise them. Geometry that needs the image size (points inside the
image) is checked by the gateway once it has read the image header.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Coord = Annotated[float, Field(allow_inf_nan=False)]
Point = Annotated[list[Coord], Field(min_length=2, max_length=2)]


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class _Strict(BaseModel):
    # Unknown fields are a client's typo more often than not: say so instead of ignoring.
    model_config = ConfigDict(extra="forbid")


class Prompt(_Strict):
    """One object to segment: points with labels, a box, or both."""

    points: list[Point] | None = Field(None, description="Pixel coordinates [[x, y], ...].")
    labels: list[Literal[0, 1]] | None = Field(
        None, description="One per point: 1 foreground, 0 background."
    )
    box: Annotated[list[Coord], Field(min_length=4, max_length=4)] | None = Field(
        None, description="[x1, y1, x2, y2] in pixels."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Prompt:
        if self.points is None and self.box is None:
            raise ValueError("a prompt needs points, a box, or both")
        if self.points is not None:
            if not self.points:
                raise ValueError("points must not be empty; omit the field instead")
            if self.labels is None or len(self.labels) != len(self.points):
                raise ValueError("labels must be given, one per point")
        elif self.labels is not None:
            raise ValueError("labels given without points")
        if self.box is not None:
            x1, y1, x2, y2 = self.box
            if not (x2 > x1 and y2 > y1):
                raise ValueError("box must be [x1, y1, x2, y2] with x2 > x1 and y2 > y1")
        return self


class AutoParams(_Strict):
    """Knobs of SAM 2's automatic mask generator, with its defaults."""

    points_per_side: int = Field(32, ge=1, le=128)
    points_per_batch: int = Field(64, ge=1, le=1024)
    pred_iou_thresh: float = Field(0.8, ge=0.0, le=1.0)
    stability_score_thresh: float = Field(0.95, ge=0.0, le=1.0)
    stability_score_offset: float = Field(1.0, ge=0.0, le=10.0)
    box_nms_thresh: float = Field(0.7, ge=0.0, le=1.0)
    crop_n_layers: int = Field(0, ge=0, le=3)
    crop_nms_thresh: float = Field(0.7, ge=0.0, le=1.0)
    crop_n_points_downscale_factor: int = Field(1, ge=1, le=8)
    min_mask_region_area: int = Field(0, ge=0, le=1_000_000)


class OutputOptions(_Strict):
    format: Literal["rle", "png"] = Field(
        "rle", description="`rle`: COCO compressed RLE; `png`: base64 1-bit PNG per mask."
    )
    min_score: float = Field(0.0, ge=0.0, le=1.0, description="Drop masks below this IoU.")


class JobSpec(_Strict):
    """Everything about a job except the image bytes."""

    model: str | None = Field(None, description="Model variant; the server default if omitted.")
    mode: Literal["prompt", "auto"] = "prompt"
    prompts: list[Prompt] = Field(default_factory=list)
    multimask: bool = Field(True, description="Three candidates per object, best first.")
    auto: AutoParams = Field(default_factory=AutoParams)
    output: OutputOptions = Field(default_factory=OutputOptions)

    @model_validator(mode="after")
    def _mode(self) -> JobSpec:
        if self.mode == "prompt" and not self.prompts:
            raise ValueError("mode=prompt needs at least one prompt")
        if self.mode == "auto" and self.prompts:
            raise ValueError("mode=auto takes no prompts; use mode=prompt")
        return self


class JobCreate(JobSpec):
    """JSON body of `POST /v1/jobs`: a base64 image or the id of an uploaded one."""

    image: str | None = Field(None, description="Base64-encoded image file (PNG, JPEG, WebP).")
    image_id: str | None = Field(None, description="Id returned by `POST /v1/images`.")

    @model_validator(mode="after")
    def _one_image(self) -> JobCreate:
        if (self.image is None) == (self.image_id is None):
            raise ValueError("give exactly one of `image` and `image_id`")
        return self


# --- responses -------------------------------------------------------------------


class ErrorBody(BaseModel):
    type: str = Field(description='Stable name of the error (README, "Errors").')
    message: str = Field(description="What went wrong, for people.")


class ErrorResponse(BaseModel):
    """Every error answer of the API."""

    error: ErrorBody


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    redis: bool = Field(description="Redis answered.")
    workers: int = Field(description="Warm workers heard from within the heartbeat window.")
    models: list[str] | None = Field(None, description="Models they serve (when ready).")
    reason: str | None = Field(None, description="Why not ready (when unavailable).")


class ImageInfo(BaseModel):
    image_id: str
    width: int
    height: int
    format: str | None = None


class ModelStamp(BaseModel):
    name: str
    checkpoint_sha256: str
    weights: Literal["checkpoint", "random"]
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="Compute precision the worker ran SAM 2 in (bf16/fp16: autocast on "
        "CUDA; masks may differ from fp32 by a few edge pixels).",
    )


class Segmentation(BaseModel):
    size: list[int] = Field(description="[height, width]")
    counts: str | None = Field(None, description="COCO compressed RLE (format=rle).")
    png: str | None = Field(None, description="Base64 PNG, 1 bit per pixel (format=png).")


class MaskRecord(BaseModel):
    segmentation: Segmentation
    area: int
    bbox: list[float] = Field(description="[x, y, width, height] in pixels.")
    predicted_iou: float
    stability_score: float | None = None
    prompt_index: int | None = Field(None, description="Index into `prompts`; null in auto.")
    point_coords: list[list[float]] | None = Field(
        None, description="Auto mode: the grid point that produced the mask."
    )
    crop_box: list[float] | None = None


class Timings(BaseModel):
    queue_s: float = 0.0
    decode_s: float = 0.0
    embed_s: float = 0.0
    predict_s: float = 0.0
    encode_s: float = 0.0
    embedding_cache_hit: bool | None = Field(
        None,
        description="Prompt mode: the image's embedding came from the worker's cache "
        "(no fetch, decode or encoder run).",
    )
    encoder_batch_size: int | None = Field(
        None,
        description="Prompt mode: images encoded in the same forward pass as this job's "
        "(cross-job batching; 1 when encoded alone, absent on a cache hit). embed_s is "
        "that whole pass.",
    )


class JobResult(BaseModel):
    image: ImageInfo
    model: ModelStamp
    masks: list[MaskRecord]
    timings: Timings
    notes: list[str] = Field(default_factory=list)


# --- video results (the rest of video jobs' shapes: shared/video_schemas.py) ---


class VideoInfo(BaseModel):
    """`POST /v1/videos`'s answer. Sizes are as displayed (rotation applied)."""

    video_id: str
    frames: int
    fps: float
    width: int
    height: int
    duration_s: float
    codec: str = Field(description="h264, hevc, vp8, vp9, av1; jpeg or png for a zip of frames.")
    container: Literal["mp4", "matroska", "zip"] = Field(
        description="mp4 (MP4/MOV), matroska (MKV/WebM) or zip (numbered frames)."
    )
    rotation: int = Field(0, description="Display rotation applied to the frames, degrees.")
    bytes: int


class ObjectSummary(BaseModel):
    obj_id: int
    frames_present: int = Field(description="Recorded frames where its mask is not empty.")
    first_frame: int | None = None
    last_frame: int | None = None


class VideoResult(BaseModel):
    video: VideoInfo
    model: ModelStamp
    frames: int = Field(description="Frame records written (GET /v1/jobs/{id}/frames).")
    objects: list[ObjectSummary]
    timings: dict[str, float]
    notes: list[str] = Field(default_factory=list)


class Progress(BaseModel):
    frames_done: int
    frames_total: int


class JobPublic(BaseModel):
    id: str
    status: JobStatus
    model: str
    mode: Literal["prompt", "auto", "video"]
    image_id: str | None = None
    video_id: str | None = Field(None, description="Mode video: the tracked video.")
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    progress: Progress | None = Field(
        None, description="Mode video, once running: frame records written and to write."
    )
    result: JobResult | VideoResult | None = None
    error: ErrorBody | None = None


class WorkerInfo(BaseModel):
    name: str
    device: str
    warm: bool
    last_seen_s: float


class ModelPublic(BaseModel):
    name: str
    config: str
    default: bool
    workers: int = Field(description="Workers serving it now (warm and heard from recently).")
    queued: int = Field(description="Jobs waiting in its queue.")
