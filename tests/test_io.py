"""The one image decoder: modes, alpha, EXIF orientation, and the pixel limit checked before decoding."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from taskcodec.errors import DataError
from taskcodec.io import load_image, read_rgb


def _png(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kwargs.pop("format", "PNG"), **kwargs)
    return buffer.getvalue()


def test_modes_become_rgb() -> None:
    assert read_rgb(_png(Image.fromarray(np.array([[0, 65535]], np.uint16)))).tolist() == [[[0] * 3, [255] * 3]]
    la = Image.new("LA", (3, 2), (90, 0))
    assert (read_rgb(_png(la)) == 90).all()  # alpha dropped, not composited
    rgba = read_rgb(_png(Image.new("RGBA", (2, 2), (10, 20, 30, 0))))
    assert rgba[0, 0].tolist() == [10, 20, 30]
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    palette.info["transparency"] = 1
    assert read_rgb(_png(palette))[0, 0].tolist() == [200, 100, 50]
    assert read_rgb(_png(Image.new("CMYK", (3, 3), (0, 0, 0, 0)), format="JPEG")).min() > 250
    assert load_image(_png(Image.new("1", (5, 4), 1))).shape == (3, 4, 5)


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (6, 2), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    assert read_rgb(_png(image, format="JPEG", exif=exif.tobytes())).shape == (6, 2, 3)


def _huge_png(width: int, height: int) -> bytes:
    """A valid small PNG whose header claims ``width x height``: decoding it would need gigabytes."""
    data = bytearray(_png(Image.new("RGB", (1, 1))))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def test_pixel_limit_is_checked_from_the_header() -> None:
    start = time.perf_counter()
    with pytest.raises(DataError, match="over the limit"):
        read_rgb(_huge_png(100_000, 100_000), "bomb.png")
    with pytest.raises(DataError, match="5000x4000 = 20000000 pixels, over the limit of 16777216"):
        read_rgb(_huge_png(5_000, 4_000), "big.png")  # under Pillow's own bound: ours must catch it
    with pytest.raises(DataError, match="over the limit of 100"):
        read_rgb(_png(Image.new("RGB", (20, 20))), max_pixels=100)
    assert time.perf_counter() - start < 2


@pytest.mark.parametrize("data", [b"", b"\x89PNG\r\n\x1a\n", b"GIF89a" + b"\x00" * 20, _png(Image.new("RGB", (9, 9)))[:45]])
def test_unreadable_images_are_data_errors(data: bytes) -> None:
    with pytest.raises(DataError, match="cannot read image 'x.png'"):
        read_rgb(data, "x.png")
