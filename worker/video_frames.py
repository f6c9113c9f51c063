"""Frames for SAM 2's video predictor, decoded when it asks for them.

Meta's `init_state` loads every frame of the video up front (float32 at the model's
input size: 12 MiB a frame at 1024 px); SAM 2 itself only ever reads
`inference_state["images"][i]` one frame at a time (`_get_image_feature`). So the
state gets `LazyFrames` instead: a sequence that decodes frame `i` on demand and
keeps the last few, resized, in a small cache. Preprocessing is Meta's JPEG loader's
step for step (sam2/utils/misc.py `_load_img_as_tensor` + `load_video_frames_*`):
PIL resize to image_size x image_size, /255 in float64, then float32 and the
ImageNet mean/std. The tensors are bit-identical to what `init_state` would hold.

`RedisBlob` is the video file itself, read in chunks from Redis (the fleet's only
shared store) as the decoder asks for bytes: neither the file nor its frames are
ever whole in a worker's memory.
"""

from __future__ import annotations

import io
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

import numpy as np
import torch
from PIL import Image

from sam2fleet.shared.errors import InvalidVideo
from sam2fleet.shared.video_files import FrameReader

# sam2/utils/misc.py load_video_frames: ImageNet statistics.
IMG_MEAN = (0.485, 0.456, 0.406)
IMG_STD = (0.229, 0.224, 0.225)


def preprocess(rgb: np.ndarray, image_size: int) -> np.ndarray:
    """Resized as Meta's loader does (PIL's default filter, bicubic): uint8 SxSx3."""
    return np.array(Image.fromarray(rgb).convert("RGB").resize((image_size, image_size)))


def normalise(resized: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Meta's arithmetic in Meta's order and dtypes: /255 in float64, then float32."""
    img = torch.from_numpy(resized / 255.0).permute(2, 0, 1).float()
    img -= mean
    img /= std
    return img


class LazyFrames:
    """`inference_state["images"]` that decodes on demand: frame `i` as a normalised
    3 x S x S float32 CPU tensor (SAM 2 moves it to its device itself).

    Forward tracking reads frames in order: the decoder simply runs on. Backward
    tracking reads them in reverse: on a miss the decoder restarts (from the keyframe
    before) `cache_frames` frames earlier and keeps all of them, so a video is
    decoded about once per `cache_frames` frames backward, not once per frame.
    """

    def __init__(self, reader: FrameReader, image_size: int, cache_frames: int = 16) -> None:
        self.reader = reader
        self.image_size = image_size
        self.cache_frames = max(1, cache_frames)
        self.cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._decoding: Iterator[tuple[int, np.ndarray]] | None = None
        self._next = -1  # the frame `_decoding` yields next
        self._last = -1  # the frame asked for last
        self._mean = torch.tensor(IMG_MEAN, dtype=torch.float32)[:, None, None]
        self._std = torch.tensor(IMG_STD, dtype=torch.float32)[:, None, None]
        self.decoded = 0  # frames decoded so far (for tests and metrics)
        self.decode_s = 0.0  # seconds spent decoding and resizing

    def __len__(self) -> int:
        return self.reader.frames

    def __getitem__(self, index: int) -> torch.Tensor:
        return normalise(self.resized(index), self._mean, self._std)

    def resized(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} is outside the video's {len(self)} frames")
        backward = index == self._last - 1
        self._last = index
        found = self.cache.get(index)
        if found is not None:
            self.cache.move_to_end(index)
            return found
        if self._decoding is None or self._next != index:
            start = max(0, index - self.cache_frames + 1) if backward else index
            self._decoding = self.reader.iter_from(start)
            self._next = start
        decoding = self._decoding
        self._decoding = None  # kept below only while it can run on
        mark = time.perf_counter()
        for position, rgb in decoding:
            self.decoded += 1
            self._keep(position, preprocess(rgb, self.image_size))
            self._next = position + 1
            if position >= index:
                self._decoding = decoding
                break
        self.decode_s += time.perf_counter() - mark
        found = self.cache.get(index)
        if found is None:
            raise InvalidVideo(f"frame {index} could not be decoded (the video ended early)")
        return found

    def _keep(self, index: int, resized: np.ndarray) -> None:
        self.cache[index] = resized
        self.cache.move_to_end(index)
        while len(self.cache) > self.cache_frames:
            self.cache.popitem(last=False)

    def close(self) -> None:
        self._decoding = None
        self.cache.clear()
        self.reader.close()


class RedisBlob(io.RawIOBase):
    """A read-only, seekable file over a blob stored as numbered chunk keys, fetched
    as they are read (a few kept). PyAV and zipfile read through it. `fetch` reads
    one key (the worker's retries a Redis restart)."""

    def __init__(
        self,
        fetch: Callable[[str], bytes | None],
        chunk_keys: list[str],
        chunk_bytes: int,
        size: int,
    ) -> None:
        super().__init__()
        self.fetch = fetch
        self.chunk_keys = chunk_keys
        self.chunk_bytes = chunk_bytes
        self.size = size
        self.position = 0
        self._chunks: OrderedDict[int, bytes] = OrderedDict()
        self.fetched = 0  # chunk fetches, for tests

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self.position < self.size:
            n, offset = divmod(self.position, self.chunk_bytes)
            chunk = self._chunk(n)
            take = min(len(view) - done, len(chunk) - offset)
            if take <= 0:
                break
            view[done : done + take] = chunk[offset : offset + take]
            done += take
            self.position += take
        return done

    def _chunk(self, n: int) -> bytes:
        found = self._chunks.get(n)
        if found is not None:
            self._chunks.move_to_end(n)
            return found
        data = self.fetch(self.chunk_keys[n])
        if data is None:
            raise InvalidVideo("the video expired while the job ran; upload it again")
        self.fetched += 1
        self._chunks[n] = data
        while len(self._chunks) > 4:
            self._chunks.popitem(last=False)
        return bytes(data)
