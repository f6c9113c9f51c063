"""`POST /segment`: the synchronous endpoint of the common SAM tutorials, on the queue.

Clients written for the tutorial shape (`image_base64`, `prompt_type`, `points`,
`boxes`, `confidence_threshold` → `masks_base64`, `scores`, `num_masks`,
`inference_time_ms`) keep working: the request becomes an ordinary job (same
validation, same queue, same workers) and the handler waits for it. A job that
does not end within the timeout is cancelled and answered 504 `timeout`.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sam2fleet.api.auth import Owner, check_rate
from sam2fleet.api.deps import ServiceDep, SettingsDep
from sam2fleet.api.openapi import answers
from sam2fleet.api.payload import decode_base64_image, validation_message
from sam2fleet.shared.errors import InvalidInput, InvalidPrompt
from sam2fleet.shared.schemas import JobSpec

router = APIRouter(tags=["compatibility"])

Coord = Annotated[float, Field(allow_inf_nan=False)]


class SegmentRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # tutorial clients send assorted extras

    image_base64: str = Field(
        description="The image file (PNG, JPEG, WebP) as base64; a "
        "`data:image/...;base64,` prefix is accepted."
    )
    prompt_type: Literal["point", "box", "auto"] = Field(
        "point",
        description="`point`: all points are one object; `box`: one object per "
        "box; `auto`: segment everything.",
    )
    points: list[Annotated[list[Coord], Field(min_length=2, max_length=2)]] | None = Field(
        None, description="[[x, y], ...] in pixels of the displayed image."
    )
    point_labels: list[Literal[0, 1]] | None = Field(
        None,
        description="One per point, 1 foreground / 0 background; default all 1. "
        "`labels` is accepted too.",
    )
    labels: list[Literal[0, 1]] | None = Field(None, description="Alias of `point_labels`.")
    boxes: list[Annotated[list[Coord], Field(min_length=4, max_length=4)]] | None = Field(
        None, description="[[x1, y1, x2, y2], ...]; one object each."
    )
    confidence_threshold: float = Field(
        0.0, ge=0.0, le=1.0, description="Drop masks whose predicted IoU is below this."
    )
    multimask_output: bool | None = Field(
        None,
        description="Three candidates per object. Default: true for a single "
        "point (ambiguous), false otherwise.",
    )
    model: str | None = Field(None, description="Model variant; the server default if omitted.")
    points_per_side: int | None = Field(
        None, ge=1, le=128, description="prompt_type=auto: grid density."
    )
    timeout_s: float | None = Field(
        None,
        gt=0.0,
        le=600.0,
        description="How long to wait for the job (default SAM2FLEET_MAX_WAIT_S).",
    )


class SegmentResponse(BaseModel):
    masks_base64: list[str] = Field(
        description="One PNG (1 bit, 0/1 = 0/255) per mask, best score first."
    )
    scores: list[float] = Field(description="SAM's predicted IoU of each mask, same order.")
    num_masks: int
    inference_time_ms: float = Field(description="Worker time: decode + embed + predict + encode.")
    total_time_ms: float = Field(description="Wall time of this request, queueing included.")
    job_id: str
    image_width: int
    image_height: int


def _spec(req: SegmentRequest) -> JobSpec:
    points = req.points or []
    boxes = req.boxes or []
    labels = req.point_labels if req.point_labels is not None else req.labels
    prompts: list[dict[str, Any]] = []
    if req.prompt_type == "point":
        if not points:
            raise InvalidPrompt("prompt_type=point needs `points`: [[x, y], ...]")
        if boxes:
            raise InvalidPrompt("prompt_type=point takes no `boxes`; use prompt_type=box")
        labels = labels if labels is not None else [1] * len(points)
        if len(labels) != len(points):
            raise InvalidPrompt(f"{len(points)} points but {len(labels)} labels")
        prompts = [{"points": points, "labels": labels}]
        multimask = req.multimask_output if req.multimask_output is not None else len(points) == 1
    elif req.prompt_type == "box":
        if not boxes:
            raise InvalidPrompt("prompt_type=box needs `boxes`: [[x1, y1, x2, y2], ...]")
        if points:
            raise InvalidPrompt("prompt_type=box takes no `points`; use prompt_type=point")
        prompts = [{"box": b} for b in boxes]
        multimask = bool(req.multimask_output)
    else:
        if points or boxes:
            raise InvalidPrompt("prompt_type=auto takes no `points` or `boxes`")
        multimask = True
    body: dict[str, Any] = {
        "model": req.model,
        "mode": "auto" if req.prompt_type == "auto" else "prompt",
        "prompts": prompts,
        "multimask": multimask,
        "output": {"format": "png", "min_score": req.confidence_threshold},
    }
    if req.points_per_side is not None and req.prompt_type == "auto":
        body["auto"] = {"points_per_side": req.points_per_side}
    try:
        return JobSpec.model_validate(body)
    except ValidationError as exc:
        raise InvalidInput(validation_message(exc)) from None


@router.post(
    "/segment",
    response_model=SegmentResponse,
    summary="Compatibility route: the tutorial's synchronous segment call",
    responses=answers(400, 401, 413, 422, 429, 500, 503, 504),
)
async def segment(
    req: SegmentRequest, request: Request, service: ServiceDep, settings: SettingsDep, owner: Owner
) -> Any:
    """Submit a job and wait for it (see the README, "Compatibility route")."""
    started = time.monotonic()
    await check_rate(request, owner)  # a submit like any other: same key, same limits
    spec = _spec(req)
    data = decode_base64_image(req.image_base64, settings)
    image = service.probe(data)  # stored only once the job is admitted
    timeout = req.timeout_s if req.timeout_s is not None else settings.max_wait_s
    job = await service.submit_and_wait(spec, image, owner, started + timeout, data)
    result = job["result"]
    masks = sorted(result["masks"], key=lambda m: -m["predicted_iou"])
    t = result["timings"]
    worker_s = t["decode_s"] + t["embed_s"] + t["predict_s"] + t["encode_s"]
    return SegmentResponse(
        masks_base64=[m["segmentation"]["png"] for m in masks],
        scores=[m["predicted_iou"] for m in masks],
        num_masks=len(masks),
        inference_time_ms=round(worker_s * 1000, 3),
        total_time_ms=round((time.monotonic() - started) * 1000, 3),
        job_id=job["id"],
        image_width=result["image"]["width"],
        image_height=result["image"]["height"],
    )
