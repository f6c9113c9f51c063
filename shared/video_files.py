"""Reading video files with PyAV (FFmpeg bundled in its wheel): frames by index, as
displayed, from a container (MP4/MOV, MKV/WebM) or a zip of numbered frames.

The gateway uses it to probe an upload (shared/video_probe.py), workers to decode
frames on demand while they track, the client to draw overlays. Nothing here holds
more than the frames it is asked for: a reader seeks to the keyframe before a frame
and decodes forward from there, so any frame is reachable without decoding (or
keeping) the video from its start.

Frame `i` is the `i`-th frame in presentation order, the numbering Meta's SAM 2
loaders use (decord's frame list, or a folder of numbered JPEGs).
"""

from __future__ import annotations

import bisect
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, Protocol

import numpy as np

from sam2fleet.shared.errors import InvalidVideo, UnsupportedVideo
from sam2fleet.shared.images import decode_rgb

# Decoder names PyAV reports, mapped to the codec they decode.
_CODEC_NAMES = {"libdav1d": "av1", "libaom-av1": "av1", "libvpx": "vp8", "libvpx-vp9": "vp9"}
ACCEPTED_CODECS = ("h264", "hevc", "vp8", "vp9", "av1")
# FFmpeg's demuxer names: one for the MP4/MOV family, one for Matroska/WebM.
CONTAINERS = {"mov,mp4,m4a,3gp,3g2,mj2": "mp4", "matroska,webm": "matroska"}
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a first entry, or an empty archive
# The first bytes of the accepted containers: an ISO/QuickTime box type at offset 4,
# or Matroska's EBML header. A file that starts so but does not open is cut or broken.
_BOX_TYPES = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")
_EBML = b"\x1a\x45\xdf\xa3"


def looks_like_container(head: bytes) -> bool:
    return head[4:8] in _BOX_TYPES or head.startswith(_EBML)


FRAME_SUFFIXES = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}
_NUMBER = re.compile(r"(\d+)$")


class FrameReader(Protocol):
    """Frames of one video, as displayed (rotation applied), HxWx3 uint8 RGB."""

    frames: int

    def iter_from(self, index: int) -> Iterator[tuple[int, np.ndarray]]:
        """Frames `index`, `index + 1`, ... to the end, decoded one at a time."""
        ...

    def close(self) -> None: ...


def is_zip(head: bytes) -> bool:
    return head.startswith(ZIP_MAGIC)


def open_frames(file: IO[bytes], *, max_pixels: int) -> FrameReader:
    """A reader for a container file or a zip of frames, told apart by their first bytes."""
    file.seek(0)
    head = file.read(4)
    file.seek(0)
    if is_zip(head):
        return ZipFrames(file, max_pixels=max_pixels)
    return ContainerFrames(file)


def displayed(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """A decoded frame turned as players show it. `rotation` is FFmpeg's display-matrix
    angle (counter-clockwise degrees; a phone's portrait video says -90), which
    players undo by turning the picture the other way, as np.rot90 does for k > 0."""
    k = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


@dataclass(frozen=True)
class PacketIndex:
    """Presentation timestamps of every frame (sorted) and of the keyframes."""

    pts: list[int]
    keyframe_pts: list[int]

    def frame_of(self, pts: int) -> int:
        i = bisect.bisect_left(self.pts, pts)
        return min(i, len(self.pts) - 1)

    def keyframe_before(self, index: int) -> int:
        """The timestamp of the last keyframe at or before frame `index`."""
        k = bisect.bisect_right(self.keyframe_pts, self.pts[index]) - 1
        return self.keyframe_pts[max(k, 0)] if self.keyframe_pts else self.pts[0]


def scan_packets(container: Any, stream: Any) -> PacketIndex:
    """Demux (no decoding) the whole stream: one timestamp per frame. Packets without
    a timestamp or payload (a decoder flush, padding) carry no frame."""
    pts, keys = [], []
    try:
        for packet in container.demux(stream):
            if packet.pts is None or packet.size == 0:
                continue
            pts.append(int(packet.pts))
            if packet.is_keyframe:
                keys.append(int(packet.pts))
    except Exception as exc:  # av.error.FFmpegError and friends: a cut or broken file
        raise InvalidVideo(f"the video is truncated or corrupt: {_ffmpeg_message(exc)}") from None
    pts.sort()
    keys.sort()
    return PacketIndex(pts, keys)


def _ffmpeg_message(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def open_container(file: IO[bytes]) -> tuple[Any, Any]:
    """The PyAV container and its video stream; 415/422 for what is not a usable video."""
    import av

    file.seek(0)
    head = file.read(12)
    file.seek(0)
    try:
        container = av.open(file, mode="r")
    except av.error.InvalidDataError as exc:
        if looks_like_container(head):
            raise InvalidVideo(
                f"the video is truncated or corrupt: {_ffmpeg_message(exc)}"
            ) from None
        raise UnsupportedVideo(
            "not a recognised video; send MP4/MOV (H.264, H.265, AV1), WebM/MKV "
            "(VP8, VP9, AV1) or a zip of numbered JPEG/PNG frames"
        ) from None
    except av.error.FFmpegError as exc:
        raise InvalidVideo(f"the video is truncated or corrupt: {_ffmpeg_message(exc)}") from None
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        if "audio" in kinds:
            raise InvalidVideo("the file holds audio only; send a video")
        raise UnsupportedVideo(f"the file holds no video stream (streams: {kinds or 'none'})")
    return container, container.streams.video[0]


def codec_name(stream: Any) -> str:
    name = str(stream.codec_context.codec.name)
    return _CODEC_NAMES.get(name, name)


class ContainerFrames:
    """Frames of a container file, decoded on demand. Seeks to the keyframe at or
    before the first frame asked for, then decodes forward."""

    def __init__(self, file: IO[bytes], index: PacketIndex | None = None) -> None:
        self.container, self.stream = open_container(file)
        self.stream.thread_type = "AUTO"  # frame threads: decoding keeps up with a GPU
        self.index = index or scan_packets(self.container, self.stream)
        self.frames = len(self.index.pts)
        self.rotation: int | None = None  # known once a frame is decoded

    def iter_from(self, index: int) -> Iterator[tuple[int, np.ndarray]]:
        if not 0 <= index < self.frames:
            raise IndexError(f"frame {index} is outside the video's {self.frames} frames")
        self.container.seek(
            self.index.keyframe_before(index), stream=self.stream, backward=True, any_frame=False
        )
        position = None  # frame number of the last decoded frame, when pts are missing
        try:
            for frame in self.container.decode(self.stream):
                if frame.pts is not None:
                    position = self.index.frame_of(int(frame.pts))
                elif position is not None:
                    position += 1
                else:
                    continue  # no way to place it: skip until a timestamped frame
                if position < index:
                    continue  # between the keyframe and the first frame asked for
                self.rotation = int(round(frame.rotation or 0))
                yield position, displayed(frame.to_ndarray(format="rgb24"), self.rotation)
        except Exception as exc:  # GeneratorExit (a consumer done early) is no Exception
            raise InvalidVideo(
                f"frame {position} could not be decoded: {_ffmpeg_message(exc)}"
            ) from None

    def close(self) -> None:
        self.container.close()


@dataclass(frozen=True)
class ZipListing:
    """The frames of a zip, in frame order: entry names and their image format."""

    names: list[str]
    format: str  # "jpeg" or "png"


def list_zip_frames(archive: zipfile.ZipFile) -> tuple[ZipListing, list[zipfile.ZipInfo]]:
    """Entries sorted by the number ending each file name; 422 for anything else
    (a file that is not a JPEG/PNG frame, a name without a number, a number twice,
    frames in both formats). Folders and macOS resource forks are ignored."""
    numbered: dict[int, zipfile.ZipInfo] = {}
    formats = set()
    for info in archive.infolist():
        name = info.filename
        base = name.rsplit("/", 1)[-1]
        if info.is_dir() or name.startswith("__MACOSX/") or base.startswith("."):
            continue
        stem, dot, suffix = base.rpartition(".")
        fmt = FRAME_SUFFIXES.get(f".{suffix.lower()}") if dot else None
        if fmt is None:
            raise InvalidVideo(f"zip entry {name!r} is not a .jpg/.jpeg/.png frame")
        match = _NUMBER.search(stem)
        if match is None:
            raise InvalidVideo(
                f"zip entry {name!r} is not numbered; name frames like 00000.jpg, 00001.jpg, ..."
            )
        number = int(match.group(1))
        if number in numbered:
            raise InvalidVideo(
                f"zip entries {numbered[number].filename!r} and {name!r} have the same number"
            )
        numbered[number] = info
        formats.add(fmt)
    if len(formats) > 1:
        raise InvalidVideo("the zip mixes JPEG and PNG frames; use one format")
    infos = [numbered[n] for n in sorted(numbered)]
    return ZipListing([i.filename for i in infos], formats.pop() if formats else "jpeg"), infos


class ZipFrames:
    """Frames of a zip of numbered JPEG/PNG files, each decoded when asked for
    (EXIF orientation applied, as for images)."""

    rotation = 0

    def __init__(self, file: IO[bytes], *, max_pixels: int) -> None:
        try:
            self.archive = zipfile.ZipFile(file)
            self.listing, _ = list_zip_frames(self.archive)
        except zipfile.BadZipFile as exc:
            raise InvalidVideo(f"the zip is truncated or corrupt: {exc}") from None
        self.frames = len(self.listing.names)
        self.max_pixels = max_pixels

    def read(self, index: int) -> np.ndarray:
        try:
            data = self.archive.read(self.listing.names[index])
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise InvalidVideo(f"frame {index} of the zip could not be read: {exc}") from None
        return decode_rgb(data, max_pixels=self.max_pixels)

    def iter_from(self, index: int) -> Iterator[tuple[int, np.ndarray]]:
        if not 0 <= index < self.frames:
            raise IndexError(f"frame {index} is outside the video's {self.frames} frames")
        for i in range(index, self.frames):
            yield i, self.read(i)

    def close(self) -> None:
        self.archive.close()
