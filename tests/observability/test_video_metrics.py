"""A worker's video metrics after real video jobs."""

from __future__ import annotations

from tests.observability.conftest import VIDEO_FRAMES, WORKERS, ObsFleet, Traffic
from tests.observability.test_metrics import scrape, total


def test_video_metrics_count_frames_and_release_state(obs: ObsFleet, traffic: Traffic) -> None:
    workers = [scrape(obs.worker_url(w)) for w in WORKERS]
    jobs = len(traffic.video)
    assert jobs >= 1
    finished = total(workers, "sam2fleet_jobs_finished_total", outcome="succeeded", mode="video")
    assert finished == jobs
    frames = total(workers, "sam2fleet_video_frames_tracked_total")
    assert frames == jobs * VIDEO_FRAMES
    assert total(workers, "sam2fleet_video_frame_seconds_count") == frames
    assert total(workers, "sam2fleet_video_frame_seconds_sum") > 0
    # Between video jobs nothing is held.
    assert total(workers, "sam2fleet_video_state_bytes") == 0
