"""WebP and AVIF through Pillow (libwebp; native AVIF or pillow-avif-plugin), with their payload parsers."""

from __future__ import annotations

import struct
from typing import Any

from taskcodec.baselines.base import (
    _check_int,
    _PillowCodec,
    avif_backend,
    register_baseline,
)
from taskcodec.errors import CodecError


def webp_payload_bytes(data: bytes) -> int:
    """Data length of the VP8/VP8L bitstream chunk of a WebP file (see the module docstring)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise CodecError("Not a WebP file: missing the 'RIFF....WEBP' header; pass a complete WebP file.")
    (riff_size,) = struct.unpack("<I", data[4:8])
    end = 8 + riff_size
    if end > len(data):
        raise CodecError(
            f"Malformed WebP: RIFF size says {end} bytes but the file has {len(data)}; it is truncated."
        )
    pos, payload = 12, 0
    while pos + 8 <= end:
        fourcc = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        if pos + 8 + size > end:
            raise CodecError(f"Malformed WebP: chunk {fourcc!r} at byte {pos} runs past the end of the file.")
        if fourcc in (b"VP8 ", b"VP8L"):
            payload += size
        pos += 8 + size + (size & 1)  # chunks are padded to an even length
    if payload == 0:
        raise CodecError(
            "Malformed WebP: no 'VP8 ' or 'VP8L' bitstream chunk; animated WebP is not supported."
        )
    return payload


def avif_payload_bytes(data: bytes) -> int:
    """Total contents of the top-level `mdat` boxes of an AVIF file (see the module docstring)."""
    if len(data) < 12 or data[4:8] != b"ftyp":
        raise CodecError(
            "Not an AVIF file: it does not start with an ISO-BMFF 'ftyp' box; pass a complete AVIF file."
        )
    pos, payload, found = 0, 0, False
    while pos < len(data):
        if pos + 8 > len(data):
            raise CodecError(f"Malformed AVIF: a box header at byte {pos} is cut off; the file is truncated.")
        size, box_type = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            if pos + 16 > len(data):
                raise CodecError(f"Malformed AVIF: a 64-bit box size at byte {pos} is cut off.")
            (size,) = struct.unpack(">Q", data[pos + 8 : pos + 16])
            header = 16
        elif size == 0:
            size = len(data) - pos
        if size < header or pos + size > len(data):
            raise CodecError(f"Malformed AVIF: box {box_type!r} at byte {pos} has a bad size {size}.")
        if box_type == b"mdat":
            payload += size - header
            found = True
        pos += size
    if not found:
        raise CodecError("Malformed AVIF: no 'mdat' box, so the file holds no coded image data.")
    return payload


class WebP(_PillowCodec):
    name, format = "webp", "WEBP"

    def __init__(self, quality: int, method: int = 6, lossless: bool = False) -> None:
        self.quality = _check_int("WebP quality", quality, 0, 100)
        self.method = _check_int("WebP method", method, 0, 6)
        self.lossless = bool(lossless)
        self.setting = ("lossless,effort=" if lossless else "q=") + str(self.quality)
        if method != 6:
            self.setting += f",m={self.method}"

    def _options(self) -> dict[str, Any]:
        return {"quality": self.quality, "method": self.method, "lossless": self.lossless}

    def _payload(self, data: bytes) -> int:
        return webp_payload_bytes(data)


class AVIF(_PillowCodec):
    name, format = "avif", "AVIF"

    def __init__(self, quality: int, speed: int = 6) -> None:
        if avif_backend() is None:
            raise CodecError(
                "AVIF unavailable: this Pillow has no AVIF support; install pillow-avif-plugin "
                "(pip install pillow-avif-plugin) or Pillow >= 11.3 built with libavif."
            )
        self.quality = _check_int("AVIF quality", quality, 0, 100)
        self.speed = _check_int("AVIF speed", speed, 0, 10)
        self.setting = f"q={self.quality}" + ("" if speed == 6 else f",s={self.speed}")

    def _options(self) -> dict[str, Any]:
        return {"quality": self.quality, "speed": self.speed}

    def _payload(self, data: bytes) -> int:
        return avif_payload_bytes(data)


register_baseline("webp", WebP, "quality", [5, 10, 20, 30, 50, 75, 90])
register_baseline("avif", AVIF, "quality", [10, 25, 40, 50, 60, 70, 80, 90])  # below ~25 libavif sizes flatten out at small images
