"""The fleet's video masks are SAM 2's: RLE-identical, frame by frame, to Meta's
`SAM2VideoPredictor` run in-process as Meta runs it (bf16 autocast) on the same
checkpoint and the same decoded frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests import video_oracle
from tests.oracle import rle
from tests.support import Fleet
from tests.system.video_client import VIDEO_SIZE, by_frame, track, upload, video_fleet_fixture
from tests.video_support import decode_video, encode_video, moving_frames

video_fleet = video_fleet_fixture("voracle")

W, H = 160, 120


def box_mask() -> np.ndarray:
    """The red box of `moving_frames` on frame 0, as a mask prompt."""
    mask = np.zeros((H, W), bool)
    mask[H // 3 : H // 3 + H // 4, W // 8 : W // 8 + W // 5] = True
    return mask


SCENARIOS: dict[str, tuple[int, str, list[dict[str, Any]]]] = {
    "one object clicked on frame 0": (
        6,
        "forward",
        [{"obj_id": 1, "frame": 0, "points": [[40, 50]], "labels": [1]}],
    ),
    "two objects, a box on frame 3, a click on 0 corrected on 5": (
        8,
        "forward",
        [
            {"obj_id": 2, "frame": 0, "points": [[120, 30]], "labels": [1]},
            {"obj_id": 1, "frame": 3, "box": [20, 35, 60, 75]},
            {"obj_id": 2, "frame": 5, "points": [[120, 32], [60, 100]], "labels": [1, 0]},
        ],
    ),
    "backward from a middle frame": (
        6,
        "backward",
        [{"obj_id": 5, "frame": 4, "points": [[48, 50]], "labels": [1]}],
    ),
    "a mask prompt": (5, "forward", [{"obj_id": 3, "frame": 0, "mask": box_mask()}]),
}


def as_request(prompt: dict[str, Any]) -> dict[str, Any]:
    if "mask" not in prompt:
        return prompt
    return {**prompt, "mask": {"size": [H, W], "counts": rle(prompt["mask"])}}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_video_masks_match_sam2_video_predictor(
    video_fleet: Fleet, video_checkpoint: Path, name: str
) -> None:
    n, direction, prompts = SCENARIOS[name]
    data = encode_video(moving_frames(n, W, H))
    video = upload(video_fleet.base_url, data)
    job, records = track(
        video_fleet.base_url,
        video["video_id"],
        [as_request(p) for p in prompts],
        direction=direction,
    )
    want = video_oracle.track(video_checkpoint, VIDEO_SIZE, decode_video(data), prompts, direction)
    got = by_frame(records)
    assert got == want
    # Compared masks are neither empty nor the whole frame, so equality says something.
    areas = [o["area"] for r in records for o in r["objects"]]
    assert areas and all(0 < a < W * H for a in areas)
    assert job["progress"] == {"frames_done": len(want), "frames_total": len(want)}
    assert job["result"]["frames"] == len(want)
    assert job["result"]["model"]["precision"] == "bf16"
