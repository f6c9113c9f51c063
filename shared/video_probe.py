"""Checking a video upload before it is accepted (the gateway, in a thread).

Everything a job needs to be validated is read here, once: the number of frames
(every packet of the stream is demuxed, nothing is decoded), the frame rate, the size
as displayed (rotation applied), the codec. The first frame and the whole last GOP
are decoded too, so a file cut short or a codec FFmpeg cannot decode is refused now
with a clear 4xx, not half-way through a job. Refused:

- not a video (415), a codec or container outside the accepted ones (415);
- audio only, zero frames, a truncated or corrupt file, a variable frame rate (422);
- more frames or pixels than the limits allow (413, naming the setting);
- zips: entries that are not numbered JPEG/PNG frames, frames of different sizes,
  a frame over the image size limit or compressed beyond any image's ratio (a zip
  bomb), a corrupt archive.
"""

from __future__ import annotations

import statistics
import zipfile
from dataclasses import dataclass
from typing import IO, Any

from sam2fleet.shared.errors import InvalidVideo, Sam2FleetError, UnsupportedVideo, VideoTooLarge
from sam2fleet.shared.images import check_image, probe_image
from sam2fleet.shared.schemas import VideoInfo
from sam2fleet.shared.video_files import (
    ACCEPTED_CODECS,
    CONTAINERS,
    ContainerFrames,
    codec_name,
    is_zip,
    list_zip_frames,
    open_container,
    scan_packets,
)

# JPEG and PNG data barely deflate further: a frame stored at a ratio far above this
# is not an image, it is a bomb.
MAX_ZIP_RATIO = 50


@dataclass(frozen=True)
class VideoLimits:
    max_frames: int
    max_pixels: int
    max_frame_bytes: int  # one frame of a zip, as an image upload

    @classmethod
    def of(cls, settings: Any) -> VideoLimits:
        return cls(settings.max_video_frames, settings.max_video_pixels, settings.max_image_bytes)


def probe_video(
    file: IO[bytes], video_id: str, size: int, limits: VideoLimits, zip_fps: float
) -> VideoInfo:
    file.seek(0)
    head = file.read(4)
    if not head:
        raise InvalidVideo("the upload is empty (zero bytes)")
    if is_zip(head):
        return _probe_zip(file, video_id, size, limits, zip_fps)
    return _probe_container(file, video_id, size, limits)


def _check_frames(frames: int, limits: VideoLimits) -> None:
    if frames == 0:
        raise InvalidVideo("the video has no frames")
    if frames > limits.max_frames:
        raise VideoTooLarge(
            f"the video has {frames} frames; the limit is {limits.max_frames} "
            "(SAM2FLEET_MAX_VIDEO_FRAMES)"
        )


def _check_pixels(width: int, height: int, limits: VideoLimits) -> None:
    if width * height > limits.max_pixels:
        raise VideoTooLarge(
            f"frames are {width}x{height} = {width * height} pixels; the limit is "
            f"{limits.max_pixels} (SAM2FLEET_MAX_VIDEO_PIXELS)"
        )


def _probe_container(file: IO[bytes], video_id: str, size: int, limits: VideoLimits) -> VideoInfo:
    container, stream = open_container(file)
    try:
        kind = CONTAINERS.get(container.format.name)
        if kind is None:
            raise UnsupportedVideo(
                f"container {container.format.name} is not accepted; send MP4/MOV or WebM/MKV"
            )
        codec = codec_name(stream)
        if codec not in ACCEPTED_CODECS:
            raise UnsupportedVideo(
                f"video codec {codec} is not accepted; send {', '.join(ACCEPTED_CODECS)}"
            )
        _check_pixels(stream.codec_context.width, stream.codec_context.height, limits)
        index = scan_packets(container, stream)
        _check_frames(len(index.pts), limits)
        declared = int(stream.frames or 0)
        if declared > len(index.pts):
            raise InvalidVideo(
                f"the video is truncated: its index lists {declared} frames, "
                f"the file holds {len(index.pts)}"
            )
        fps = _constant_rate(index.pts, stream.time_base, stream.average_rate)
    finally:
        container.close()
    reader = ContainerFrames(file, index)
    try:
        first = next(reader.iter_from(0), None)
        # Decoding the last frame decodes its whole GOP, from the keyframe before it.
        tail = [i for i, _ in reader.iter_from(reader.frames - 1)]
    finally:
        reader.close()
    if first is None or reader.frames - 1 not in tail:
        raise InvalidVideo("the video is truncated: its last frames do not decode")
    height, width = first[1].shape[:2]
    frames = len(index.pts)
    return VideoInfo(
        video_id=video_id,
        frames=frames,
        fps=round(fps, 6),
        width=width,
        height=height,
        duration_s=round(frames / fps, 6),
        codec=codec,
        container=kind,
        rotation=reader.rotation or 0,
        bytes=size,
    )


def _constant_rate(pts: list[int], time_base: Any, average_rate: Any) -> float:
    """Frames per second of a constant-rate stream; 422 for a variable rate, which a
    frame-numbered job could not describe honestly (frame n would not be at n/fps)."""
    if len(pts) < 2:
        rate = float(average_rate or 0)
        return rate if rate > 0 else 1.0
    steps = [b - a for a, b in zip(pts, pts[1:], strict=False)]
    typical = statistics.median(steps)
    if typical <= 0:
        raise InvalidVideo("the video has frames with the same timestamp")
    # Timestamps are rounded to the time base (33/34 ms at 30 fps in a 1 ms base):
    # one tick of jitter, plus 2 %, is still a constant rate.
    tolerance = max(1.0, 0.02 * typical)
    worst = max(abs(s - typical) for s in steps)
    if worst > tolerance:
        raise InvalidVideo(
            f"the video has a variable frame rate (frame steps from {min(steps) * time_base}"
            f" s to {max(steps) * time_base} s); re-encode it at a constant rate, e.g. "
            "ffmpeg -i in.mp4 -fps_mode cfr -r 30 out.mp4"
        )
    # The container's own rate when the steps agree with it (a 1 ms base stores 12 fps
    # as 83/84 ms steps); else the mean step over the whole stream.
    declared = float(average_rate or 0)
    if declared > 0 and abs(1 / declared - float(typical * time_base)) <= tolerance * time_base:
        return declared
    return float((len(pts) - 1) / ((pts[-1] - pts[0]) * time_base))


def _probe_zip(
    file: IO[bytes], video_id: str, size: int, limits: VideoLimits, fps: float
) -> VideoInfo:
    try:
        archive = zipfile.ZipFile(file)
    except zipfile.BadZipFile as exc:
        raise InvalidVideo(f"the zip is truncated or corrupt: {exc}") from None
    with archive:
        listing, infos = list_zip_frames(archive)
        _check_frames(len(infos), limits)
        sizes = set()
        for number, info in enumerate(infos):
            if info.file_size > limits.max_frame_bytes:
                raise VideoTooLarge(
                    f"zip entry {info.filename!r} unpacks to {info.file_size} bytes; a frame "
                    f"may have {limits.max_frame_bytes} (SAM2FLEET_MAX_IMAGE_BYTES)"
                )
            if info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1):
                raise InvalidVideo(
                    f"zip entry {info.filename!r} is compressed {info.file_size} : "
                    f"{info.compress_size}, beyond any image's ratio: refused as a zip bomb"
                )
            try:
                data = archive.read(info)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise InvalidVideo(f"zip entry {info.filename!r} is corrupt: {exc}") from None
            try:
                probed = probe_image(data, max_pixels=2**62)  # the video's limit below
            except Sam2FleetError as exc:
                raise InvalidVideo(f"zip entry {info.filename!r}: {exc.message}") from None
            _check_pixels(probed.width, probed.height, limits)
            sizes.add((probed.width, probed.height))
            if len(sizes) > 1:
                first, other = sorted(sizes)[:2]
                raise InvalidVideo(
                    f"the zip's frames differ in size ({first[0]}x{first[1]} and "
                    f"{other[0]}x{other[1]}, at {info.filename!r}); frames of a video share one"
                )
            if number in (0, len(infos) - 1):
                check_image(data, max_pixels=2**62)  # whole, not truncated
    width, height = sizes.pop()
    return VideoInfo(
        video_id=video_id,
        frames=len(infos),
        fps=fps,
        width=width,
        height=height,
        duration_s=round(len(infos) / fps, 6),
        codec=listing.format,
        container="zip",
        rotation=0,
        bytes=size,
    )
