"""Image checks (gateway) and decoding (worker), with Pillow (and zlib for PNG).

The gateway checks an image before queueing a job on it: format and size from the
header, and that the file is whole and uncorrupted, each done once and without
decoding pixels the worker decodes anyway (api/service.py). The worker decodes the
pixels, once. Both honour the EXIF orientation so prompt coordinates refer to the
image as it is displayed.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sam2fleet.shared.errors import ImageTooLarge, InvalidImage, UnsupportedImage

ACCEPTED_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
# EXIF orientations 5-8 rotate by 90° or 270°, so width and height swap on display.
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ProbedImage:
    image_id: str
    format: str
    width: int
    height: int


def image_id_for(data: bytes) -> str:
    """Content address: the same bytes uploaded twice are stored once."""
    return hashlib.sha256(data).hexdigest()


def _open(data: bytes) -> Image.Image:
    if not data:
        raise InvalidImage("the image is empty (zero bytes)")
    try:
        # Pillow's own bomb guard only warns below 2x its limit; our pixel cap is
        # checked explicitly from the header, so silence the warning here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image declares too many pixels: {exc}") from None
    except UnidentifiedImageError:
        raise UnsupportedImage("not a recognised image; send PNG, JPEG or WebP") from None
    except (OSError, SyntaxError, ValueError) as exc:  # recognised, but the header is cut
        raise InvalidImage(f"image header is truncated or corrupt: {exc}") from None


def probe_image(data: bytes, *, max_pixels: int) -> ProbedImage:
    """Read the header only: format, displayed size. No pixel is decoded."""
    return _probe(data, _open(data), max_pixels)


def _probe(data: bytes, img: Image.Image, max_pixels: int) -> ProbedImage:
    fmt = img.format or "unknown"
    if fmt not in ACCEPTED_FORMATS:
        raise UnsupportedImage(f"image format {fmt} is not accepted; send PNG, JPEG or WebP")
    width, height = img.size
    if width < 1 or height < 1:
        raise InvalidImage(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    if _orientation(data, img) in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    return ProbedImage(image_id_for(data), fmt, width, height)


def _orientation(data: bytes, img: Image.Image) -> int:
    try:
        if img.format == "PNG":
            # Pillow reads a PNG's eXIf chunk by decoding the whole image when the
            # chunk comes after the pixel data; the chunks say it without decoding.
            exif = Image.Exif()
            for kind, payload in _png_chunks(data, verify=False):
                if kind == b"eXIf":
                    exif.load(bytes(payload))
            return int(exif.get(_EXIF_ORIENTATION, 1))
        return int(img.getexif().get(_EXIF_ORIENTATION, 1))
    except InvalidImage:
        raise
    except Exception:  # a broken EXIF block must not reject an otherwise good image
        return 1


def check_image(data: bytes, *, max_pixels: int) -> ProbedImage:
    """The gateway's checks: `probe_image`, and that the file is whole, so a truncated
    or damaged upload is refused with 422 rather than failing its job later. Without
    decoding the pixels the worker decodes anyway: PNG by its container (every chunk
    present and matching its CRC, up to the closing IEND), JPEG by a decode at 1/8
    scale (every entropy-coded block is still read), WebP by a decode (libwebp has no
    cheaper complete pass). A PNG whose compressed pixel data is invalid under valid
    checksums (made so, not damaged in transit) fails on the worker instead, as
    `invalid_image`."""
    img = _open(data)
    probed = _probe(data, img, max_pixels)
    try:
        if img.format == "PNG":
            for _ in _png_chunks(data):
                pass
        else:
            if img.format == "JPEG":
                img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"image is truncated or corrupt: {exc}") from None
    return probed


def _png_chunks(data: bytes, verify: bool = True) -> Iterator[tuple[bytes, memoryview]]:
    """Each chunk's type and payload up to IEND (its checksum verified, with `verify`)."""
    pos, view = 8, memoryview(data)
    while True:
        if pos + 8 > len(data):
            raise InvalidImage("PNG is truncated: it ends before its IEND chunk")
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 8 + length
        if end + 4 > len(data):
            raise InvalidImage(f"PNG is truncated inside its {kind.decode('latin-1')} chunk")
        payload = view[pos + 8 : end]
        crc = struct.unpack_from(">I", data, end)[0]
        if verify and zlib.crc32(payload, zlib.crc32(kind)) != crc:
            raise InvalidImage(f"PNG chunk {kind.decode('latin-1')} fails its checksum")
        yield kind, payload
        if kind == b"IEND":
            return
        pos = end + 4


def decode_rgb(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode to an HxWx3 uint8 array, as displayed (EXIF orientation applied)."""
    img = _open(data)
    _probe(data, img, max_pixels)
    try:
        img.load()
        img = ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"image could not be decoded: {exc}") from None
    return _to_rgb(img)


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale (medical, geospatial): scale to 8 bits instead of clipping.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        grey = np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    # Alpha is dropped, not composited: the colour under a transparent pixel is
    # what SAM sees, as with SAM's own loaders (PIL convert("RGB")).
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
