"""`sam2fleet enqueue FOLDER --video-prompts PROMPTS.jsonl --out DIR`: videos through
the fleet, a few at a time, their frames saved as they arrive.

PROMPTS.jsonl holds one line per video of FOLDER:

    {"video": "clip.mp4", "prompts": [{"obj_id": 1, "frame": 0, "points": [[320, 200]],
     "labels": [1]}], "direction": "both", "stride": 1, "start": 0, "end": null, "fps": 30}

(`prompts` as the API takes them; the other keys optional; `fps` only for a zip of
frames). Output folder:

    DIR/state.jsonl          journal: submitted / done / failed per video
    DIR/jobs/NAME.json       the video, the job spec, the final job record
    DIR/frames/NAME.ndjson   the job's frame records, in tracking order

A re-run skips videos done with the same file content and spec, and re-attaches to
jobs submitted before an interruption (the submit's Idempotency-Key is derived from
the file's sha256 and the spec, so no job runs twice).
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from sam2fleet.client import ApiError, Client
from sam2fleet.video import VIDEO_EXTS, VideoJobFailed, Videos

OPTION_KEYS = ("start", "end", "direction", "stride")
DEFAULT_CONCURRENCY = 2  # a worker tracks one video at a time: a few in flight suffice


@dataclass(frozen=True)
class VideoItem:
    name: str
    path: Path
    prompts: list[dict[str, Any]]
    options: dict[str, Any]
    fps: float | None

    @property
    def safe_name(self) -> str:
        return self.name.replace("/", "__")


def load_items(folder: Path, prompts_file: Path) -> list[VideoItem]:
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder of videos")
    items, seen = [], set()
    for n, line in enumerate(prompts_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            name, prompts = entry["video"], entry["prompts"]
        except (ValueError, KeyError, TypeError):
            raise ValueError(
                f'{prompts_file}:{n}: expected {{"video": ..., "prompts": [...]}}'
            ) from None
        path = folder / name
        if not path.is_file() or path.suffix.lower() not in VIDEO_EXTS:
            raise ValueError(
                f"{prompts_file}:{n}: {path} is not a video file ({', '.join(sorted(VIDEO_EXTS))})"
            )
        if name in seen:
            raise ValueError(f"{prompts_file}:{n}: {name} is listed twice")
        seen.add(name)
        options = {k: entry[k] for k in OPTION_KEYS if k in entry}
        items.append(VideoItem(name, path, list(prompts), options, entry.get("fps")))
    return items


def fingerprint(item: VideoItem) -> str:
    digest = hashlib.sha256()
    with item.path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    spec = json.dumps({"prompts": item.prompts, **item.options, "fps": item.fps}, sort_keys=True)
    return hashlib.sha256(f"{digest.hexdigest()}:{spec}".encode()).hexdigest()


class Journal:
    """DIR/state.jsonl, appended to by several threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.done: set[tuple[str, str]] = set()
        if path.exists():
            for line in path.read_text().splitlines():
                entry = json.loads(line)
                if entry["event"] == "done":
                    self.done.add((entry["video"], entry["key"]))

    def add(self, **entry: Any) -> None:
        with self.lock, self.path.open("a") as f:
            f.write(json.dumps({"ts": time.time(), **entry}) + "\n")


def run_item(videos: Videos, item: VideoItem, out: Path, journal: Journal, timeout: float) -> str:
    key = fingerprint(item)
    if (item.name, key) in journal.done:
        return "skipped"
    info = videos.upload(item.path, fps=item.fps)
    job = videos.track(info.video_id, item.prompts, idempotency_key=key, **item.options)
    journal.add(video=item.name, key=key, event="submitted", job_id=job.id)
    frames_file = out / "frames" / f"{item.safe_name}.ndjson"
    count = 0
    status = "done"
    try:
        with frames_file.open("w") as f:
            for frame in videos.frames(job.id):
                f.write(
                    json.dumps({"frame": frame.frame, "objects": [vars(o) for o in frame.objects]})
                    + "\n"
                )
                count += 1
    except VideoJobFailed:
        status = "failed"
    final = videos.wait(job.id, timeout)
    record = {
        "video": str(item.path),
        "spec": {"prompts": item.prompts, **item.options},
        "job": final.raw,
    }
    (out / "jobs" / f"{item.safe_name}.json").write_text(json.dumps(record, indent=1))
    journal.add(
        video=item.name, key=key, event=status, job_id=job.id, frames=count, status=final.status
    )
    return status


def main(args: Any) -> int:
    try:
        items = load_items(Path(args.source), args.video_prompts)
    except (OSError, ValueError) as exc:
        print(f"sam2fleet enqueue: {exc}", file=sys.stderr)
        return 2
    out: Path = args.out
    for sub in ("jobs", "frames"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    journal = Journal(out / "state.jsonl")
    outcomes: dict[str, int] = {}
    try:
        with Client(args.server, args.api_key) as client:
            videos = Videos(client)
            with ThreadPoolExecutor(max_workers=args.concurrency or DEFAULT_CONCURRENCY) as pool:
                for item, outcome in zip(
                    items,
                    pool.map(lambda it: run_item(videos, it, out, journal, args.timeout), items),
                    strict=True,
                ):
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
                    if args.progress:
                        print(f"{item.name}: {outcome}", flush=True)
    except (httpx.HTTPError, ApiError) as exc:
        print(f"sam2fleet enqueue: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(
        f"{len(items)} videos: "
        + ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items()))
        + f"; results in {out}",
        flush=True,
    )
    return 1 if outcomes.get("failed") else 0
