"""Probing and decoding images as they are displayed."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sam2fleet.shared.errors import ImageTooLarge, InvalidImage, UnsupportedImage
from sam2fleet.shared.images import decode_rgb, image_id_for, probe_image
from tests.support import encode, scene


def test_probe_reads_format_and_size() -> None:
    data = encode(scene(64, 48))
    probed = probe_image(data, max_pixels=10_000)
    assert (probed.format, probed.width, probed.height) == ("PNG", 64, 48)
    assert probed.image_id == image_id_for(data) and len(probed.image_id) == 64


@pytest.mark.parametrize(
    ("orientation", "size"), [(1, (64, 48)), (3, (64, 48)), (6, (48, 64)), (8, (48, 64))]
)
def test_exif_orientation_sets_the_displayed_size(orientation: int, size: tuple[int, int]) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(scene(64, 48), "JPEG", exif=exif.tobytes())
    probed = probe_image(data, max_pixels=10_000)
    assert (probed.width, probed.height) == size
    assert decode_rgb(data, max_pixels=10_000).shape[:2] == (size[1], size[0])


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


def test_limits_and_refusals() -> None:
    with pytest.raises(ImageTooLarge, match="64x48"):
        probe_image(encode(scene(64, 48)), max_pixels=1000)
    with pytest.raises(UnsupportedImage):
        probe_image(encode(scene(8, 8), "GIF"), max_pixels=1000)
    with pytest.raises(InvalidImage, match="empty"):
        probe_image(b"", max_pixels=1000)
