"""Image probing (gateway) and decoding (worker), with Pillow only.

The gateway probes the header to validate a job before queueing it; the worker
decodes the pixels. Both honour the EXIF orientation so prompt coordinates refer
to the image as it is displayed.
"""

from __future__ import annotations

import hashlib
import io
import warnings
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
    img = _open(data)
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
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block must not reject an otherwise good image
        orientation = 1
    if orientation in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    return ProbedImage(image_id_for(data), fmt, width, height)


def decode_rgb(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode to an HxWx3 uint8 array, as displayed (EXIF orientation applied)."""
    probe_image(data, max_pixels=max_pixels)
    img = _open(data)
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


def verify_decodable(data: bytes) -> None:
    """Decode fully once at upload so a truncated file is refused with 422, not later."""
    img = _open(data)
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"image is truncated or corrupt: {exc}") from None
