"""Overlay videos of a video job: every frame with its objects' masks drawn in, as an
H.264 MP4 (PyAV), or a strip of a few frames side by side as a PNG.

Each object keeps one colour through the video (by its place in the job's object
order). Frames the job has no record for (outside the tracked range, between
strides) are shown as they are. `sam2fleet overlay JOB --video FILE` runs it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sam2fleet.client import decode_segmentation
from sam2fleet.overlay import draw_overlay

Records = Mapping[int, Mapping[str, Any]]  # frame number -> frame record (API shape)


def _frames(video: Path) -> Iterator[tuple[int, np.ndarray]]:
    """Every frame of the file, as displayed (rotation applied), in order."""
    from sam2fleet.shared.video_files import open_frames

    with video.open("rb") as f:
        reader = open_frames(f, max_pixels=1 << 62)
        try:
            yield from reader.iter_from(0)
        finally:
            reader.close()


def colours(records: Records) -> dict[int, int]:
    """Object id -> palette index, in order of first appearance."""
    order: dict[int, int] = {}
    for n in sorted(records):
        for obj in records[n]["objects"]:
            order.setdefault(int(obj["obj_id"]), len(order))
    return order


def draw_frame(
    rgb: np.ndarray, record: Mapping[str, Any] | None, palette: dict[int, int]
) -> Image.Image:
    image = Image.fromarray(rgb)
    if record is None:
        return image
    objects = [o for o in record["objects"] if o["area"] > 0]
    masks = [decode_segmentation(o["segmentation"]) for o in objects]
    return draw_overlay(image, masks, groups=[palette[int(o["obj_id"])] for o in objects])


def write_mp4(video: Path, records: Records, out: Path, fps: float) -> int:
    """The overlay video; the number of frames written."""
    import av

    palette = colours(records)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with av.open(str(out), "w", format="mp4") as container:
        stream: Any = None
        for n, rgb in _frames(video):
            picture = np.asarray(draw_frame(rgb, records.get(n), palette))
            # yuv420p needs even sides: repeat the last row / column when odd.
            h, w = picture.shape[:2]
            picture = np.pad(picture, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            if stream is None:
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height = picture.shape[1], picture.shape[0]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": "20"}
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
            written += 1
        if stream is not None:
            for packet in stream.encode(None):
                container.mux(packet)
    return written


def write_strip(
    video: Path, records: Records, out: Path, count: int, height: int = 240
) -> list[int]:
    """`count` recorded frames spread evenly over the job, side by side; their numbers."""
    palette = colours(records)
    recorded = sorted(records)
    if not recorded:
        raise ValueError("the job has no frame records to draw")
    count = max(1, min(count, len(recorded)))
    picks = sorted(
        {recorded[round(i * (len(recorded) - 1) / max(count - 1, 1))] for i in range(count)}
    )
    tiles = []
    for n, rgb in _frames(video):
        if n in picks:
            tile = draw_frame(rgb, records[n], palette)
            tiles.append(tile.resize((round(tile.width * height / tile.height), height)))
        if n >= picks[-1]:
            break
    gap = 4
    strip = Image.new(
        "RGB", (sum(t.width for t in tiles) + gap * (len(tiles) - 1), height), "white"
    )
    x = 0
    for tile in tiles:
        strip.paste(tile, (x, 0))
        x += tile.width + gap
    out.parent.mkdir(parents=True, exist_ok=True)
    strip.save(out, optimize=True)
    return picks


def load_records(path: Path) -> dict[int, dict[str, Any]]:
    """Frame records from an NDJSON file (the stream's lines, as `enqueue` saves them)."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            out[int(record["frame"])] = record
    return out


def fetch_records(client: Any, job_id: str) -> dict[int, dict[str, Any]]:
    from sam2fleet.video import Videos

    videos = Videos(client)
    out: dict[int, dict[str, Any]] = {}
    start: int | None = 0
    while start is not None:
        page, start = videos.page(job_id, start, limit=1000)
        out.update({f.frame: _as_dict(f) for f in page})
    return out


def _as_dict(frame: Any) -> dict[str, Any]:
    return {"frame": frame.frame, "objects": [vars(o) for o in frame.objects]}


def run_command(args: argparse.Namespace) -> int:
    """`sam2fleet overlay TARGET --video FILE`: TARGET is a job id or an NDJSON file of
    frame records (enqueue's frames/NAME.ndjson)."""
    target = Path(args.target)
    fps = 30.0
    if target.is_file():
        records = load_records(target)
    else:
        from sam2fleet.client import ApiError, Client
        from sam2fleet.video import Videos

        try:
            with Client(args.server, args.api_key) as client:
                job = Videos(client).get(args.target)
                if job.raw.get("mode") != "video":
                    print(f"sam2fleet overlay: {args.target} is not a video job", file=sys.stderr)
                    return 2
                records = fetch_records(client, args.target)
                if job.result:
                    fps = float(job.result["video"]["fps"])
        except ApiError as exc:
            print(f"sam2fleet overlay: {exc}", file=sys.stderr)
            return 2
    try:
        import av  # noqa: F401  the `video` extra
    except ImportError:
        print(
            "sam2fleet overlay: video overlays need PyAV: pip install 'sam2fleet[video]'",
            file=sys.stderr,
        )
        return 2
    if args.strip:
        out = args.out or Path(f"{target.stem}.strip.png")
        picks = write_strip(args.video, records, out, args.strip)
        print(f"{out} (frames {', '.join(map(str, picks))})")
    else:
        out = args.out or Path(f"{target.stem}.overlay.mp4")
        n = write_mp4(args.video, records, out, args.fps or fps)
        print(f"{out} ({n} frames, {len(records)} with masks)")
    return 0
