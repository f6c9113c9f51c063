"""The worker's video tracking core, in-process: Meta's predictor with lazily decoded
frames and pruned outputs gives Meta's masks, in memory that does not grow."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from pycocotools import mask as mask_utils

from sam2fleet.shared.video_files import open_frames
from sam2fleet.shared.video_schemas import VideoJobSpec, plan
from sam2fleet.worker.video_frames import LazyFrames
from sam2fleet.worker.video_tracker import (
    VideoTracker,
    build_video_predictor,
    held_bytes,
    new_state,
)
from tests import video_oracle
from tests.oracle import rle
from tests.video_support import decode_video, encode_video, moving_frames

SIZE = 128  # reduced input size: a frame costs a fraction of a second on one core
CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


@pytest.fixture(scope="module")
def predictor(video_checkpoint: Path) -> Any:
    return build_video_predictor(CONFIG, str(video_checkpoint), torch.device("cpu"), SIZE)


def lazy(data: bytes, cache_frames: int = 16) -> LazyFrames:
    return LazyFrames(open_frames(io.BytesIO(data), max_pixels=10**8), SIZE, cache_frames)


def ours(
    predictor: Any,
    data: bytes,
    prompts: list[dict[str, Any]],
    direction: str,
    precision: str,
    pruned: bool = True,
) -> tuple[dict[int, dict[int, str]], VideoTracker]:
    spec = VideoJobSpec.model_validate(
        {"mode": "video", "prompts": prompts, "video": {"direction": direction}}
    )
    frames = lazy(data)
    tracker = VideoTracker(predictor, precision)
    out: dict[int, dict[int, str]] = {}
    with video_oracle.one_thread():
        first = frames.reader.iter_from(0)
        height, width = next(first)[1].shape[:2]
        passes = plan(spec, len(frames))
        for t in tracker.track(frames, (height, width), spec.prompts, passes, pruned=pruned):
            out.setdefault(t.frame, {o: rle(m) for o, m in zip(t.obj_ids, t.masks, strict=True)})
    return out, tracker


def areas(result: dict[int, dict[int, str]], size: list[int]) -> list[int]:
    return [
        int(mask_utils.area({"size": size, "counts": c.encode()}))
        for per_frame in result.values()
        for c in per_frame.values()
    ]


def test_state_has_exactly_init_states_keys(predictor: Any) -> None:
    frames = moving_frames(2)
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        meta = video_oracle.init_state(predictor, frames, Path(tmp))
    ours_state = new_state(predictor, lazy(encode_video(frames)), 120, 160)
    assert set(ours_state) == set(meta)
    assert {k: v for k, v in ours_state.items() if k != "images"} == {
        k: v for k, v in meta.items() if k not in ("images", "cached_features")
    } | {"cached_features": {}}


def test_lazy_frames_equal_metas_loaded_frames_in_any_order(predictor: Any) -> None:
    # A keyframe every 4 frames: reading backwards and jumping both seek.
    data = encode_video(moving_frames(12), options={"g": "4", "bf": "2"})
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        meta = video_oracle.init_state(predictor, decode_video(data), Path(tmp))["images"]
    frames = lazy(data, cache_frames=3)
    order = [0, 1, 2, 3, 11, 10, 9, 8, 7, 6, 5, 4, 6, 0]
    for i in order:
        assert torch.equal(frames[i], meta[i]), i
    # Backwards, a miss decodes the next few frames back at once: not one seek per frame.
    assert frames.decoded < 2 * len(order)
    assert len(frames.cache) <= 3


def test_pruned_tracking_matches_unpruned_predictor_on_a_long_video(
    predictor: Any, video_checkpoint: Path
) -> None:
    frames = moving_frames(45)
    data = encode_video(frames)
    decoded = decode_video(data)
    # Forward and backward from frame 20: the backward pass reads outputs the forward
    # pass left around frame 20, which pruning must keep until it runs.
    prompts = [
        {"obj_id": 1, "frame": 20, "points": [[60, 50]], "labels": [1]},
        {"obj_id": 7, "frame": 22, "box": [100, 10, 150, 60]},
    ]
    want = video_oracle.track(video_checkpoint, SIZE, decoded, prompts, "both")
    got, tracker = ours(predictor, data, prompts, "both", "bf16", pruned=True)
    assert got == want
    assert len(got) == 45
    assert all(0 < a < 160 * 120 for a in areas(got, [120, 160]))
    # What the state still holds at the end: about `reach` frames per object, plus
    # each object's conditioning frame, however long the video.
    for outputs in tracker.state["output_dict_per_obj"].values():
        assert len(outputs["non_cond_frame_outputs"]) <= tracker.reach
        assert len(outputs["cond_frame_outputs"]) == 1


def test_memory_held_stays_flat_as_the_video_grows(predictor: Any) -> None:
    prompts = [{"obj_id": 1, "frame": 0, "points": [[60, 50]], "labels": [1]}]
    held = {}
    for n in (20, 40):
        got, tracker = ours(predictor, encode_video(moving_frames(n)), prompts, "forward", "fp32")
        assert len(got) == n
        held[n] = held_bytes(tracker.state)
    unpruned, tracker = ours(
        predictor, encode_video(moving_frames(20)), prompts, "forward", "fp32", pruned=False
    )
    assert held[40] == held[20]
    assert held_bytes(tracker.state) > 1.2 * held[20]


def test_fp32_is_close_to_the_bf16_reference(predictor: Any, video_checkpoint: Path) -> None:
    """fp32 (an opt-in: SAM2FLEET_PRECISION=fp32) against Meta's bf16 reference."""
    frames = moving_frames(8)
    data = encode_video(frames)
    prompts = [
        {"obj_id": 1, "frame": 0, "points": [[60, 50]], "labels": [1]},
        {"obj_id": 2, "frame": 3, "box": [100, 10, 150, 60]},
        {"obj_id": 1, "frame": 5, "points": [[70, 50], [10, 10]], "labels": [1, 0]},
    ]
    reference = video_oracle.track(video_checkpoint, SIZE, decode_video(data), prompts, "forward")
    got, _ = ours(predictor, data, prompts, "forward", "fp32")
    assert got.keys() == reference.keys()
    size = [120, 160]
    prompted = {(p["frame"], p["obj_id"]) for p in prompts}
    for frame, objects in reference.items():
        for obj_id, want in objects.items():
            a = {"size": size, "counts": want.encode()}
            b = {"size": size, "counts": got[frame][obj_id].encode()}
            assert mask_utils.area(a) > 0
            iou = float(mask_utils.iou([a], [b], [0])[0][0])
            # With random weights the logits are flat, so precision moves edges more
            # than with real ones: on a clicked frame (SAM's single-image decoder, a
            # small mask) the worst measured 0.972 at 256 px and 0.978 here; tracked
            # frames 0.988 and up.
            floor = 0.97 if (frame, obj_id) in prompted else 0.98
            assert iou >= floor, (frame, obj_id, iou)
