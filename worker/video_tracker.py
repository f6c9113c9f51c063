"""Video tracking with Meta's `SAM2VideoPredictor`, in memory that does not grow
with the video's length.

The predictor is Meta's class, built by Meta's `build_sam2_video_predictor` from
the worker's checkpoint; every mask comes from its own `add_new_points_or_box`,
`add_new_mask` and `propagate_in_video`. Two things differ from a script that calls
`init_state(video_path)`:

- The inference state is the one `init_state` makes, except that its "images" are
  `LazyFrames` (decoded on demand, worker/video_frames.py) instead of the whole
  video as one tensor.
- Between two frames of `propagate_in_video` (a generator, so the state can be
  changed while it waits) every output SAM 2 will not read again is dropped
  (`prune`). While tracking frame t forward, SAM 2 reads: all conditioning
  frames (the prompted ones: kept), the memories of frames t-1 .. t-1-r*(num_maskmem-2)
  (r = memory_temporal_stride_for_eval) and the object pointers of frames
  t-1 .. t-(max_obj_ptrs_in_encoder-1) (sam2_base.py
  `_prepare_memory_conditioned_features`); backward, the same after t. A later
  pass (direction "both": backward after forward, from the same start frame, as
  Meta's notebooks run it) reads the outputs the first pass left near its start
  frame: those are kept until it has begun. Everything else goes, so memory holds
  about `lookback` frames' outputs per object however long the video is, and the
  masks stay those of the unpruned predictor (tests/worker/test_video_tracker.py).

Precision. Meta's predictor casts its memories to bf16 as it stores them and only
runs under bf16 autocast (its examples); "bf16" here does exactly that (autocast
around every call), so its masks are the reference's, bit for bit. Without
autocast Meta's predictor fails on the first frame whose memory holds no fp32
object pointer to promote the bf16 memories with ("mat1 and mat2 must have the
same dtype"). "fp32" runs the same calls without autocast, with the memory
attention casting the memories it reads up to fp32 (`attend_in_fp32`): memories
are stored as Meta stores them, everything is computed in fp32 - on a CPU several
times faster than bf16 autocast, with masks close to, not equal to, the bf16
reference (IoU >= 0.98 on every frame, tests/worker/test_video_tracker.py).
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sam2fleet.shared.video_schemas import TrackingPass, VideoPrompt
from sam2fleet.worker.acceleration import autocast
from sam2fleet.worker.video_frames import LazyFrames

log = logging.getLogger(__name__)


@dataclass
class TrackedFrame:
    frame: int
    obj_ids: list[int]
    masks: np.ndarray  # K x H x W bool, at the video's displayed size
    object_scores: list[float]  # SAM 2's object score logits: > 0 means present


def build_video_predictor(
    config: str, checkpoint: str, device: torch.device, image_size: int | None
) -> Any:
    """Meta's video predictor on the worker's checkpoint, with Meta's post-processing
    options (hole filling, binarised memories of clicked frames)."""
    from sam2.build_sam import build_sam2_video_predictor

    overrides = [] if image_size is None else [f"++model.image_size={image_size}"]
    return build_sam2_video_predictor(
        config, checkpoint, device=str(device), hydra_overrides_extra=overrides
    )


def share_weights(predictor: Any, model: torch.nn.Module) -> None:
    """Make the predictor use `model`'s tensors (both loaded from one checkpoint), so
    a worker holds its weights on the device once for images and video."""
    predictor.load_state_dict(model.state_dict(), strict=True, assign=True)


def attend_in_fp32(predictor: Any) -> None:
    """Outside autocast, hand the memory attention its (bf16-stored) memories as fp32.
    Under autocast it changes nothing: the call is Meta's as is."""
    attention = predictor.memory_attention
    if getattr(attention, "_sam2fleet_fp32", False):
        return
    forward = attention.forward

    def forward_fp32(curr: Any, memory: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if not torch.is_autocast_enabled(memory.device.type):
            first = curr[0] if isinstance(curr, list) else curr
            memory = memory.to(first.dtype)
        return forward(curr, memory, *args, **kwargs)

    attention.forward = forward_fp32
    attention._sam2fleet_fp32 = True


def new_state(predictor: Any, images: LazyFrames, height: int, width: int) -> dict[str, Any]:
    """The dict `SAM2VideoPredictor.init_state` builds, with lazily decoded frames
    (tests/worker/test_video_tracker.py checks it has exactly init_state's keys).
    Frames and outputs stay on the model's device, as init_state's defaults."""
    device = predictor.device
    return {
        "images": images,
        "num_frames": len(images),
        "offload_video_to_cpu": False,
        "offload_state_to_cpu": False,
        "video_height": height,
        "video_width": width,
        "device": device,
        "storage_device": device,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }


def lookback(predictor: Any) -> int:
    """How many frames back (in the direction of travel) SAM 2 reads outputs from."""
    stride = int(predictor.memory_temporal_stride_for_eval)
    memories = 1 + stride * max(int(predictor.num_maskmem) - 2, 0)
    pointers = (
        int(predictor.max_obj_ptrs_in_encoder) - 1 if predictor.use_obj_ptrs_in_encoder else 0
    )
    return max(memories, pointers, 1)


def prune(
    state: dict[str, Any], frame: int, reverse: bool, reach: int, protect: list[tuple[int, int]]
) -> int:
    """Drop the non-conditioning outputs that no frame still to come reads: those more
    than `reach` frames behind `frame` in the direction of travel, unless inside a
    `protect`ed (first, last) span a later pass reads. The number dropped."""
    dropped = 0
    for obj_idx, outputs in state["output_dict_per_obj"].items():
        non_cond = outputs["non_cond_frame_outputs"]
        tracked = state["frames_tracked_per_obj"][obj_idx]
        cond = outputs["cond_frame_outputs"]
        for t in list(non_cond):
            behind = t - frame if reverse else frame - t
            if behind < reach or any(lo <= t <= hi for lo, hi in protect):
                continue
            del non_cond[t]
            if t not in cond:
                tracked.pop(t, None)
            dropped += 1
    return dropped


def held_bytes(state: dict[str, Any]) -> int:
    """Bytes of the tensors the state's outputs hold (each storage counted once)."""
    seen: dict[int, int] = {}
    for key in ("output_dict_per_obj", "temp_output_dict_per_obj"):
        for outputs in state[key].values():
            for per_frame in outputs.values():
                for out in per_frame.values():
                    for value in out.values():
                        for t in value if isinstance(value, list) else [value]:
                            if isinstance(t, torch.Tensor):
                                storage = t.untyped_storage()
                                seen[storage.data_ptr()] = int(storage.nbytes())
    return sum(seen.values())


class VideoTracker:
    """One video predictor on one device, tracking one video at a time."""

    def __init__(self, predictor: Any, precision: str) -> None:
        self.predictor = predictor
        self.precision = precision
        if precision == "fp32":
            attend_in_fp32(predictor)
        self.reach = lookback(predictor)
        self.state: dict[str, Any] = {}  # the current (or last) video's, for measurements

    def _compute(self) -> contextlib.AbstractContextManager[Any]:
        return autocast(self.predictor.device, self.precision)

    def track(
        self,
        frames: LazyFrames,
        size: tuple[int, int],
        prompts: list[VideoPrompt],
        passes: list[TrackingPass],
        *,
        pruned: bool = True,
    ) -> Iterator[TrackedFrame]:
        """Add every prompt (in the order given), then run each pass; one
        `TrackedFrame` per frame SAM 2 yields (a pass's start frame again in a
        later pass). Autocast and inference mode are entered around each step only,
        so the caller may run other work (image jobs) between frames."""
        height, width = size
        state = self.state = new_state(self.predictor, frames, height, width)
        for prompt in prompts:
            with torch.inference_mode(), self._compute():
                self._add(state, prompt, size)
        for i, tracking in enumerate(passes):
            later = passes[i + 1 :]
            protect = [(p.start - self.reach, p.start + self.reach) for p in later]
            steps = self.predictor.propagate_in_video(
                state,
                start_frame_idx=tracking.start,
                max_frame_num_to_track=tracking.frames,
                reverse=tracking.reverse,
            )
            while True:
                with torch.inference_mode(), self._compute():
                    step = next(steps, None)
                    if step is None:
                        break
                    tracked = self._frame(state, *step)
                yield tracked
                if pruned:
                    prune(state, tracked.frame, tracking.reverse, self.reach, protect)

    def _add(self, state: dict[str, Any], prompt: VideoPrompt, size: tuple[int, int]) -> None:
        if prompt.mask is not None:
            from sam2fleet.worker.masks import rle_decode

            mask = rle_decode({"size": list(size), "counts": prompt.mask.counts})
            self.predictor.add_new_mask(state, prompt.frame, prompt.obj_id, mask)
            return
        self.predictor.add_new_points_or_box(
            state,
            frame_idx=prompt.frame,
            obj_id=prompt.obj_id,
            points=np.asarray(prompt.points, dtype=np.float32) if prompt.points else None,
            labels=np.asarray(prompt.labels, dtype=np.int32) if prompt.labels else None,
            box=np.asarray(prompt.box, dtype=np.float32) if prompt.box else None,
        )

    def _frame(
        self, state: dict[str, Any], frame: int, obj_ids: list[int], video_res_masks: torch.Tensor
    ) -> TrackedFrame:
        scores = []
        for obj_idx in range(len(obj_ids)):
            outputs = state["output_dict_per_obj"][obj_idx]
            out = outputs["cond_frame_outputs"].get(frame)
            if out is None:
                out = outputs["non_cond_frame_outputs"][frame]
            scores.append(float(out["object_score_logits"].float().reshape(-1)[0]))
        # SAM 2's own threshold for its video masks (its notebooks: logits > 0.0).
        masks = (video_res_masks[:, 0] > 0.0).cpu().numpy()
        return TrackedFrame(frame, list(obj_ids), masks, scores)
