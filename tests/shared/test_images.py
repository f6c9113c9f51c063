"""Probing and decoding images as they are displayed."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from sam2fleet.shared.errors import ImageTooLarge, InvalidImage, UnsupportedImage
from sam2fleet.shared.images import check_image, decode_rgb, image_id_for, probe_image
from tests.support import encode, scene


def test_probe_reads_format_and_size() -> None:
    data = encode(scene(64, 48))
    probed = probe_image(data, max_pixels=10_000)
    assert (probed.format, probed.width, probed.height) == ("PNG", 64, 48)
    assert probed.image_id == image_id_for(data) and len(probed.image_id) == 64


# What each EXIF orientation asks of the stored pixels to show them upright (the EXIF
# standard's table), in numpy terms: independent of the code under test.
UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored
    3: lambda a: a[::-1, ::-1],  # upside down
    4: lambda a: a[::-1],  # mirrored upside down
    5: lambda a: a.transpose(1, 0, 2),  # mirrored and on its side: width and height swap
    6: lambda a: np.rot90(a, -1),  # on its side (a phone held upright)
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_every_exif_orientation_sets_the_displayed_size_and_pixels(orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(scene(64, 48), "JPEG", exif=exif.tobytes())
    swapped = orientation >= 5
    probed = probe_image(data, max_pixels=10_000)
    assert (probed.width, probed.height) == ((48, 64) if swapped else (64, 48))
    stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # no EXIF applied
    shown = decode_rgb(data, max_pixels=10_000)
    assert shown.shape[:2] == (probed.height, probed.width)
    assert np.array_equal(shown, UPRIGHT[orientation](stored))


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    ramp = (np.arange(256, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)
    data = encode(Image.fromarray(ramp))
    rgb = decode_rgb(data, max_pixels=10_000)
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255
    assert len(np.unique(rgb[..., 0])) > 200  # clipping would leave almost everything 255


def test_alpha_is_dropped_keeping_the_colour_under_it() -> None:
    rgba = np.full((4, 4, 4), 200, np.uint8)
    rgba[..., 3] = 255
    rgba[0, 0] = [10, 20, 30, 0]
    rgb = decode_rgb(encode(rgba), max_pixels=100)
    assert rgb.shape == (4, 4, 3)
    assert rgb[0, 0].tolist() == [10, 20, 30] and rgb[1, 1].tolist() == [200, 200, 200]


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (7, 1)])
def test_images_of_one_pixel_row_or_column_are_images(size: tuple[int, int]) -> None:
    data = encode(np.full((size[1], size[0], 3), 90, np.uint8))
    assert check_image(data, max_pixels=100).width == size[0]
    assert decode_rgb(data, max_pixels=100).shape == (size[1], size[0], 3)


def test_an_image_of_exactly_the_pixel_limit_is_accepted_and_one_more_is_not() -> None:
    data = encode(scene(64, 48))
    assert probe_image(data, max_pixels=64 * 48).height == 48
    assert decode_rgb(data, max_pixels=64 * 48).shape == (48, 64, 3)
    with pytest.raises(ImageTooLarge, match="= 3072 pixels; the limit is 3071"):
        probe_image(data, max_pixels=64 * 48 - 1)


def test_limits_and_refusals() -> None:
    with pytest.raises(ImageTooLarge, match="64x48"):
        probe_image(encode(scene(64, 48)), max_pixels=1000)
    with pytest.raises(UnsupportedImage):
        probe_image(encode(scene(8, 8), "GIF"), max_pixels=1000)
    with pytest.raises(InvalidImage, match="empty"):
        probe_image(b"", max_pixels=1000)


# --- the gateway's check: whole and uncorrupted, without decoding pixels twice -------


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(kind))
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _rebuilt_png(data: bytes, idat: bytes | None = None, extra_after_idat: bytes = b"") -> bytes:
    """The PNG's chunks again, its pixel data replaced by `idat` (checksums made valid)."""
    out, pos = [data[:8]], 8
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IDAT":
            if idat is None:
                out.append(_chunk(kind, payload))
            elif idat:
                out.append(_chunk(kind, idat))
                idat = b""
            out.append(extra_after_idat)
            extra_after_idat = b""
        else:
            out.append(_chunk(kind, payload))
    return b"".join(out)


@pytest.mark.parametrize("interlace", [False, True])
def test_whole_pngs_pass_the_check_interlaced_or_not(interlace: bool) -> None:
    for mode in ("RGB", "RGBA", "L", "P", "I;16"):
        img = Image.fromarray(scene(37, 23)).convert(mode if mode != "I;16" else "I")
        if mode == "I;16":
            img = Image.fromarray(np.asarray(img, dtype=np.uint16))
        data = encode(img, interlace=interlace) if interlace else encode(img)
        probed = check_image(data, max_pixels=10_000)
        assert (probed.width, probed.height) == (37, 23), mode


def test_a_damaged_or_cut_png_is_refused_at_the_gateway() -> None:
    data = encode(scene(64, 48))
    flipped = bytearray(data)
    flipped[data.index(b"IDAT") + 10] ^= 0xFF  # a bit error in transit
    with pytest.raises(InvalidImage, match="checksum"):
        check_image(bytes(flipped), max_pixels=10_000)
    with pytest.raises(InvalidImage, match="truncated"):
        check_image(data[:-12], max_pixels=10_000)  # IEND missing
    with pytest.raises(InvalidImage, match="truncated"):
        check_image(data[: data.index(b"IDAT") + 20], max_pixels=10_000)


@pytest.mark.parametrize("cut", range(1, 13))
def test_a_png_cut_anywhere_in_its_last_chunk_says_where(cut: int) -> None:
    """IEND is 12 bytes: length and type (8), no payload, a checksum (4)."""
    data = encode(scene(16, 12))
    where = "inside its IEND chunk" if cut <= 4 else "ends before its IEND chunk"
    with pytest.raises(InvalidImage, match=f"PNG is truncated.*{where}"):
        check_image(data[:-cut], max_pixels=10_000)


def test_sixteen_bit_greyscale_keeps_its_level_on_the_full_16_bit_scale() -> None:
    """A dim 16-bit image stays dim (values over 65535), not stretched to its maximum."""
    dim = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 4).astype(np.uint16)  # up to 1020
    rgb = decode_rgb(encode(Image.fromarray(dim)), max_pixels=1000)
    assert rgb.max() == 1020 * 255 // 65535 and rgb.min() == 0


def test_the_probe_reads_the_header_only_and_the_check_the_whole_file() -> None:
    data = encode(scene(64, 48))
    flipped = bytearray(data)
    flipped[data.index(b"IDAT") + 10] ^= 0xFF
    # Probing (format and size) verifies no chunk: that is the check's work.
    assert probe_image(bytes(flipped), max_pixels=10_000).width == 64
    with pytest.raises(InvalidImage, match="IDAT fails its checksum"):
        check_image(bytes(flipped), max_pixels=10_000)


def test_a_broken_exif_block_does_not_reject_a_good_image() -> None:
    data = encode(scene(64, 48))
    at = data.index(b"IDAT") - 4  # before the pixel data's chunk
    broken = data[:at] + _chunk(b"eXIf", b"not a TIFF header") + data[at:]
    assert (
        probe_image(broken, max_pixels=10_000).width,
        check_image(broken, max_pixels=10_000).height,
    ) == (64, 48)


def test_sixteen_bit_levels_map_to_eight_bits_exactly() -> None:
    """Every one of the 65536 levels: v becomes floor(v * 255 / 65535), as integers."""
    levels = np.arange(65536, dtype=np.uint32).reshape(256, 256).astype(np.uint16)
    grey = decode_rgb(encode(Image.fromarray(levels)), max_pixels=65536)[..., 0]
    assert np.array_equal(grey.ravel(), np.arange(65536) * 255 // 65535)


def test_pixel_data_made_invalid_under_valid_checksums_fails_on_the_worker() -> None:
    data = encode(scene(64, 48))
    (length,) = struct.unpack_from(">I", data, data.index(b"IDAT") - 4)
    idat = data[data.index(b"IDAT") + 4 : data.index(b"IDAT") + 4 + length]
    for bad in (idat[: len(idat) // 2], idat[:10] + b"\xff" * 20 + idat[30:]):
        crafted = _rebuilt_png(data, bad)
        check_image(crafted, max_pixels=10_000)  # the container is whole
        with pytest.raises(InvalidImage, match="decoded"):
            decode_rgb(crafted, max_pixels=10_000)


def test_a_png_exif_orientation_after_the_pixel_data_is_read_without_decoding() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _rebuilt_png(encode(scene(64, 48)), extra_after_idat=_chunk(b"eXIf", exif.tobytes()))
    assert data.index(b"eXIf") > data.index(b"IDAT")
    probed = check_image(data, max_pixels=10_000)
    assert (probed.width, probed.height) == (48, 64)
    assert decode_rgb(data, max_pixels=10_000).shape[:2] == (64, 48)  # as displayed


def test_truncated_jpeg_and_webp_are_refused() -> None:
    for fmt in ("JPEG", "WEBP"):
        data = encode(scene(64, 48), fmt, quality=90)
        assert check_image(data, max_pixels=10_000).format == fmt
        with pytest.raises(InvalidImage):
            check_image(data[: len(data) * 2 // 3], max_pixels=10_000)
