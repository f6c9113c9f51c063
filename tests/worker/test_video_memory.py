"""The gateway's and workers' prediction of a video job's memory against the peak
bytes real tracking allocates (CPU, reduced input size)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from sam2fleet.shared.video_files import open_frames
from sam2fleet.shared.video_memory import estimate_video_bytes
from sam2fleet.shared.video_schemas import VideoJobSpec, plan
from sam2fleet.worker.admission import measure_peak_bytes
from sam2fleet.worker.video_frames import LazyFrames
from sam2fleet.worker.video_tracker import VideoTracker, build_video_predictor
from tests import video_oracle
from tests.video_support import encode_video, moving_frames

SIZE = 128


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_estimate_covers_the_measured_peak_within_4x(
    video_checkpoint: Path, precision: str
) -> None:
    # A fresh predictor: its first video also pays for what SAM 2 caches once.
    predictor = build_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml", str(video_checkpoint), torch.device("cpu"), SIZE
    )
    tracker = VideoTracker(predictor, precision)
    for width, height, objects in ((160, 120, 1), (640, 480, 3)):
        data = encode_video(moving_frames(6, width, height))
        prompts = [
            {"obj_id": i, "frame": 0, "points": [[width // 4 + 10 * i, height // 2]], "labels": [1]}
            for i in range(objects)
        ]
        spec = VideoJobSpec.model_validate({"mode": "video", "prompts": prompts})
        frames = LazyFrames(open_frames(io.BytesIO(data), max_pixels=10**9), SIZE)
        steps = tracker.track(frames, (height, width), spec.prompts, plan(spec, 6))
        with video_oracle.one_thread():
            peak = measure_peak_bytes(lambda steps=steps: list(steps), torch.device("cpu"))
        estimate = estimate_video_bytes("sam2.1_hiera_tiny", SIZE, width, height, spec, precision)
        assert peak <= estimate <= 4 * peak, (width, height, objects, peak, estimate)


def test_estimate_grows_with_objects_and_resolution_not_frames() -> None:
    def spec(objects: int, frames: int) -> VideoJobSpec:
        prompts = [{"obj_id": i, "frame": 0, "box": [0, 0, 10, 10]} for i in range(objects)]
        return VideoJobSpec.model_validate(
            {"mode": "video", "prompts": prompts, "video": {"end": frames - 1}}
        )

    def est(objects: int, frames: int, w: int = 1920, h: int = 1080) -> int:
        return estimate_video_bytes("sam2.1_hiera_tiny", 1024, w, h, spec(objects, frames))

    assert est(1, 100) == est(1, 100_000)  # outputs are pruned: length does not matter
    assert est(8, 100) > est(1, 100) and est(1, 100, 3840, 2160) > est(1, 100)
