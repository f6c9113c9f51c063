"""One video case at SAM 2's full 1024 px input: the fleet's masks equal Meta's
`SAM2VideoPredictor` (bf16 autocast, as Meta runs it)."""

from __future__ import annotations

from pathlib import Path

from tests import video_oracle
from tests.support import Fleet
from tests.system.video_client import by_frame, track, upload, video_fleet_fixture
from tests.video_support import decode_video, encode_video, moving_frames

full_fleet = video_fleet_fixture("vfull", image_size=None)  # SAM 2's own 1024


def test_video_at_full_resolution_matches_sam2_video_predictor(
    full_fleet: Fleet, video_checkpoint: Path
) -> None:
    data = encode_video(moving_frames(2))  # the clicked frame and one tracked from it
    video = upload(full_fleet.base_url, data)
    prompts = [{"obj_id": 1, "frame": 0, "points": [[40, 50]], "labels": [1]}]
    job, records = track(full_fleet.base_url, video["video_id"], prompts, timeout=600)
    want = video_oracle.track(video_checkpoint, 1024, decode_video(data), prompts)
    assert by_frame(records) == want
    assert len(want) == 2
    assert all(0 < o["area"] < 160 * 120 for r in records for o in r["objects"])
