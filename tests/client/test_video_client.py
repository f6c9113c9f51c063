"""The Python client's video support, `sam2fleet enqueue` of a folder of videos, and
`sam2fleet overlay` of a video job, against a real fleet."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from sam2fleet.client import Client
from sam2fleet.video import Videos
from tests.support import ROOT, Fleet
from tests.system.video_client import video_fleet_fixture
from tests.video_support import encode_video, frames_zip, moving_frames

video_fleet = video_fleet_fixture("vclient", SAM2FLEET_PRECISION="fp32")

CLICK = {"obj_id": 4, "frame": 0, "points": [[40, 50]], "labels": [1]}


def cli(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sam2fleet.cli", *args, "--server", fleet.base_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_track_and_iterate_frames_as_they_arrive(video_fleet: Fleet, tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(encode_video(moving_frames(12)))
    with Client(video_fleet.base_url) as client:
        videos = Videos(client)
        info = videos.upload(path)
        assert (info.frames, info.width, info.height, info.codec) == (12, 160, 120, "h264")
        job = videos.track(info.video_id, [CLICK], direction="forward")
        statuses, got = [], []
        for frame in videos.frames(job.id):
            statuses.append(videos.get(job.id).status)
            got.append(frame.frame)
            mask = frame.masks()[4]
            assert mask.shape == (120, 160) and mask.any()
        assert got == list(range(12))
        assert statuses[0] == "running"  # the first frames came before the job ended
        final = videos.wait(job.id, timeout=60)
        assert final.status == "succeeded" and final.progress == {
            "frames_done": 12,
            "frames_total": 12,
        }
        page, next_start = videos.page(job.id, start=10, limit=5)
        assert [f.frame for f in page] == [10, 11] and next_start is None


def test_enqueue_a_folder_of_videos_and_resume(video_fleet: Fleet, tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(encode_video(moving_frames(6)))
    (folder / "b.zip").write_bytes(frames_zip(moving_frames(4), "JPEG"))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        json.dumps({"video": "a.mp4", "prompts": [CLICK], "stride": 2})
        + "\n"
        + json.dumps(
            {
                "video": "b.zip",
                "prompts": [{**CLICK, "frame": 3}],
                "fps": 4,
                "direction": "backward",
            }
        )
        + "\n"
    )
    out = tmp_path / "out"
    args = ("enqueue", str(folder), "--video-prompts", str(prompts), "--out", str(out))
    r = cli(video_fleet, *args)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "2 done" in r.stdout
    a = [
        json.loads(line)["frame"] for line in (out / "frames/a.mp4.ndjson").read_text().splitlines()
    ]
    b = [
        json.loads(line)["frame"] for line in (out / "frames/b.zip.ndjson").read_text().splitlines()
    ]
    assert a == [0, 2, 4] and b == [3, 2, 1, 0]
    record = json.loads((out / "jobs" / "b.zip.json").read_text())
    assert record["job"]["status"] == "succeeded"
    assert record["job"]["result"]["video"]["fps"] == 4.0
    # Again: nothing to do.
    r = cli(video_fleet, *args)
    assert r.returncode == 0 and "2 skipped" in r.stdout, r.stdout


def test_overlay_video_and_strip(video_fleet: Fleet, tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(encode_video(moving_frames(8), rotation=-90))  # displayed 120x160
    with Client(video_fleet.base_url) as client:
        videos = Videos(client)
        info = videos.upload(path)
        click = {"obj_id": 1, "frame": 0, "points": [[60, 40]], "labels": [1]}
        job = videos.wait(videos.track(info.video_id, [click]).id, timeout=120)
    assert job.status == "succeeded"
    out = tmp_path / "overlay.mp4"
    r = cli(video_fleet, "overlay", job.id, "--video", str(path), "-o", str(out))
    assert r.returncode == 0, r.stderr + r.stdout
    with av.open(str(out)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 8 and decoded[0].shape == (160, 120, 3)
    # The masks are drawn in: the overlay differs from the plain frames.
    plain = [f for _, f in zip(range(8), _displayed(path), strict=False)]
    assert np.abs(decoded[3].astype(int) - plain[3].astype(int)).mean() > 2
    strip = tmp_path / "strip.png"
    r = cli(video_fleet, "overlay", job.id, "--video", str(path), "--strip", "3", "-o", str(strip))
    assert r.returncode == 0, r.stderr
    assert "frames 0, 4, 7" in r.stdout, r.stdout  # spread evenly over frames 0..7
    with Image.open(strip) as picture:
        assert picture.height == 240 and picture.width > 3 * 160


def _displayed(path: Path) -> list[np.ndarray]:
    from sam2fleet.shared.video_files import open_frames

    reader = open_frames(io.BytesIO(path.read_bytes()), max_pixels=10**8)
    return [f for _, f in reader.iter_from(0)]


@pytest.mark.parametrize("bad", ["nope.mp4", "notes.txt"])
def test_enqueue_refuses_a_bad_prompts_file(video_fleet: Fleet, tmp_path: Path, bad: str) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"video": bad, "prompts": [CLICK]}) + "\n")
    r = cli(
        video_fleet,
        "enqueue",
        str(tmp_path),
        "--video-prompts",
        str(prompts),
        "--out",
        str(tmp_path / "o"),
    )
    assert r.returncode == 2 and "is not a video file" in r.stderr
