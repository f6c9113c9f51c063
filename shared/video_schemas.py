"""Shapes of video jobs: the upload's answer, the submit body, frame records, the
result, and which frames a job tracks in which order (Meta's, shared by the gateway,
the workers and the frame stream).

A video job tracks objects prompted on some frames through the rest of the video
with SAM 2's video predictor. Prompts name their object (`obj_id`) and frame; an
object may be prompted on several frames (a click on frame 0, a correction on frame
40). Tracking starts at the earliest prompted frame, as Meta's
`propagate_in_video` does, and runs forward, backward, or both (forward first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from sam2fleet.shared.schemas import Prompt, _Strict

MAX_OBJ_ID = 2**31 - 1


class RleMask(_Strict):
    size: Annotated[list[int], Field(min_length=2, max_length=2)] = Field(
        description="[height, width]: the video's displayed size."
    )
    counts: str = Field(description="COCO compressed RLE, as in results.")


class VideoPrompt(Prompt):
    """One object's prompt on one frame: points with labels, a box, both, or a mask."""

    obj_id: int = Field(ge=0, le=MAX_OBJ_ID, description="The object this prompt is about.")
    frame: int = Field(ge=0, description="Frame number (0-based, presentation order).")
    mask: RleMask | None = Field(None, description="A mask of the object on that frame.")

    @model_validator(mode="after")
    def _consistent(self) -> VideoPrompt:
        if self.mask is None:
            try:  # the image prompt's rules for points, labels and box
                Prompt(points=self.points, labels=self.labels, box=self.box)
            except ValidationError as exc:
                raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
        elif self.points is not None or self.box is not None or self.labels is not None:
            raise ValueError("a mask prompt takes no points, labels or box")
        return self


class VideoOptions(_Strict):
    start: int = Field(0, ge=0, description="First frame of the range tracked.")
    end: int | None = Field(None, ge=0, description="Last frame of the range; default the last.")
    direction: Literal["forward", "backward", "both"] = Field(
        "forward",
        description="From the earliest prompted frame: towards the end, towards the start, "
        "or both (forward first).",
    )
    stride: int = Field(
        1, ge=1, le=10_000, description="Write every stride-th frame of the range (all tracked)."
    )


class VideoJobSpec(_Strict):
    """A video job, as stored with the job record."""

    model: str | None = Field(None, description="Model variant; the server default if omitted.")
    mode: Literal["video"]
    prompts: list[VideoPrompt] = Field(min_length=1)
    video: VideoOptions = Field(default_factory=VideoOptions)

    @model_validator(mode="after")
    def _one_prompt_per_object_and_frame(self) -> VideoJobSpec:
        # SAM 2 keeps one prompt per object and frame (a second would replace the
        # first): two are a client's mistake, not something to resolve silently.
        seen: dict[tuple[int, int], int] = {}
        for i, p in enumerate(self.prompts):
            key = (p.obj_id, p.frame)
            if key in seen:
                raise ValueError(
                    f"prompts[{seen[key]}] and prompts[{i}] both prompt object {p.obj_id} on "
                    f"frame {p.frame}; give its points, box or mask in one prompt"
                )
            seen[key] = i
        return self

    def obj_ids(self) -> list[int]:
        """Object ids in order of first appearance (SAM 2's object order)."""
        return list(dict.fromkeys(p.obj_id for p in self.prompts))


class VideoJobCreate(VideoJobSpec):
    """JSON body of `POST /v1/jobs` with `"mode": "video"`."""

    video_id: str = Field(description="Id returned by `POST /v1/videos`.")


# --- tracking plan -------------------------------------------------------------------


@dataclass(frozen=True)
class TrackingPass:
    """One `propagate_in_video(start_frame_idx, max_frame_num_to_track, reverse)` call."""

    start: int
    frames: int
    reverse: bool

    def order(self, num_frames: int) -> range:
        """The frames it yields, in order: Meta's `processing_order`, quirks included
        (a reverse pass from frame 0 yields nothing)."""
        if self.reverse:
            if self.start == 0:
                return range(0)
            return range(self.start, max(self.start - self.frames, 0) - 1, -1)
        return range(self.start, min(self.start + self.frames, num_frames - 1) + 1)


def plan(spec: VideoJobSpec, num_frames: int) -> list[TrackingPass]:
    opts = spec.video
    end = num_frames - 1 if opts.end is None else opts.end
    first = min(p.frame for p in spec.prompts)
    forward = TrackingPass(first, end - first, reverse=False)
    backward = TrackingPass(first, first - opts.start, reverse=True)
    return {"forward": [forward], "backward": [backward], "both": [forward, backward]}[
        opts.direction
    ]


def frames_written(spec: VideoJobSpec, num_frames: int) -> list[int]:
    """Frames that get a record, in the order they are tracked (each once)."""
    opts = spec.video
    out: dict[int, None] = {}
    for tracking in plan(spec, num_frames):
        for f in tracking.order(num_frames):
            if (f - opts.start) % opts.stride == 0:
                out.setdefault(f)
    return list(out)


# --- results ----------------------------------------------------------------------------


class FrameObject(BaseModel):
    obj_id: int
    segmentation: dict[str, object] = Field(description="{size: [H, W], counts: COCO RLE}")
    area: int
    bbox: list[float] = Field(description="[x, y, width, height] in pixels.")
    object_score: float = Field(description="SAM 2's object score logit; > 0: present.")


class FrameRecord(BaseModel):
    frame: int
    objects: list[FrameObject]


class FramePage(BaseModel):
    frames: list[FrameRecord]
    next_start: int | None = Field(
        None, description="`start` of the next page; null when no later frame is recorded yet."
    )
