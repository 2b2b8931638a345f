"""Standard codecs as real encoders with real byte counts: the baselines the learned codec must beat.

Every codec writes a real file with a real encoder (Pillow's libjpeg, libwebp, libavif) and decodes
that file with the real decoder, so `Encoded.decoded` is exactly what a receiver would see.

Two sizes are reported, because the conventions make whole-file bytes the headline and put
payload-only bytes beside them for fairness (a 64x64 JPEG is mostly tables and headers):

- ``file_bytes``: ``len(data)``, everything a user would store or send.
- ``payload_bytes``: the coded image data alone, with containers, headers and tables removed:

  * JPEG: the entropy-coded scan data. For each SOS segment, the bytes after the SOS header up to
    the next marker that is not RSTn (stuffed ``FF 00`` and RST markers count as scan data), summed
    over scans (a progressive file has several). SOI, APPn/JFIF, DQT, SOF, DHT, the SOS headers
    and EOI are header and tables. See `jpeg_scan_sizes`.
  * WebP: the data length of the ``VP8 `` (lossy) or ``VP8L`` (lossless) chunk, as its RIFF chunk
    header states it; the RIFF/WEBP header, the chunk headers, padding and any other chunk are
    excluded.
  * AVIF: the contents of every top-level ISO-BMFF ``mdat`` box (box headers excluded); ``ftyp`` and
    ``meta`` (item info, properties, colour) are header.
  * Downsample and Identity: the file is raw RGB pixels with no header, so payload == file.
  * DownsampleJPEG: the JPEG payload of the small JPEG.

Downsampling uses `PIL.Image.Image.reduce` (a box filter: each output pixel is the mean of an
f x f block; edge blocks of odd sizes average the pixels they have), giving ceil(h/f) x ceil(w/f).
"""

from __future__ import annotations

import abc
import hashlib
import inspect
import io
import json
import math
import numbers
import struct
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from taskcodec.errors import CodecError, ConfigError

__all__ = [
    "AVIF",
    "DEFAULT_SWEEPS",
    "BlockAverage",
    "JPEG",
    "Codec",
    "Downsample",
    "DownsampleJPEG",
    "Encoded",
    "Identity",
    "JPEGQTable",
    "WebP",
    "available_codecs",
    "avif_backend",
    "avif_payload_bytes",
    "jpeg_payload_bytes",
    "jpeg_scan_sizes",
    "libjpeg_scaled",
    "make_codec",
    "png_payload_bytes",
    "webp_payload_bytes",
]

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
SUBSAMPLINGS = ("4:4:4", "4:2:2", "4:2:0")


@dataclass(frozen=True, eq=False)  # eq=False: comparing ndarrays field-wise is ambiguous
class Encoded:
    """One image through one codec: the real file, what the real decoder makes of it, and its payload."""

    data: bytes
    decoded: np.ndarray
    payload_bytes: int

    @property
    def file_bytes(self) -> int:
        return len(self.data)


# --------------------------------------------------------------------------- payload parsers


def jpeg_scan_sizes(data: bytes) -> list[int]:
    """Entropy-coded bytes of each scan (SOS segment) of a JPEG file, in file order."""
    n = len(data)
    if data[:2] != b"\xff\xd8":
        raise CodecError("Not a JPEG: missing SOI marker (FF D8) at the start; pass a complete JPEG file.")
    pos, scans = 2, []
    while True:
        if pos >= n or data[pos] != 0xFF:
            raise CodecError(
                f"Malformed JPEG: expected a marker at byte {pos}; the file is truncated or corrupt."
            )
        while pos < n and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= n:
            raise CodecError("Malformed JPEG: file ends inside a marker; it is truncated.")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # standalone markers outside a scan
            continue
        if pos + 2 > n:
            raise CodecError("Malformed JPEG: file ends inside a segment length; it is truncated.")
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if length < 2 or pos + length > n:
            raise CodecError(
                f"Malformed JPEG: segment FF {marker:02X} at byte {pos - 2} has a bad length {length}."
            )
        pos += length
        if marker != 0xDA:  # SOS: entropy-coded data follows its header
            continue
        start = pos
        while True:
            pos = data.find(b"\xff", pos)
            if pos < 0 or pos + 1 >= n:
                raise CodecError(
                    "Malformed JPEG: scan data runs to the end of the file without an EOI marker."
                )
            nxt = data[pos + 1]
            if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:  # stuffed byte or restart marker: still scan data
                pos += 2
            elif nxt == 0xFF:  # fill byte: the marker starts later
                pos += 1
            else:
                break
        scans.append(pos - start)
    if not scans:
        raise CodecError(
            "Malformed JPEG: no SOS (start of scan) segment before EOI; the file holds no image data."
        )
    return scans


def jpeg_payload_bytes(data: bytes) -> int:
    """Entropy-coded scan bytes of a JPEG, summed over its scans (see the module docstring)."""
    return sum(jpeg_scan_sizes(data))


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


def png_payload_bytes(data: bytes) -> int:
    """Total data length of a PNG's IDAT chunks (signature, chunk headers/CRCs, IHDR, IEND excluded)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise CodecError("Not a PNG file: missing the PNG signature; pass a complete PNG file.")
    pos, payload, found = 8, 0, False
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if pos + 12 + size > len(data):
            raise CodecError(f"Malformed PNG: chunk {kind!r} at byte {pos} runs past the end of the file.")
        if kind == b"IDAT":
            payload, found = payload + size, True
        pos += 12 + size
    if not found:
        raise CodecError("Malformed PNG: no IDAT chunk, so the file holds no image data.")
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


# --------------------------------------------------------------------------- helpers


def _as_rgb_image(image: np.ndarray | Image.Image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if not isinstance(image, np.ndarray):
        raise CodecError(f"Expected an HxWx3 uint8 numpy array or a PIL image, got {type(image).__name__}.")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.size == 0:
        raise CodecError(
            f"Expected an HxWx3 uint8 RGB array, got shape {image.shape} dtype {image.dtype}; "
            "convert with np.asarray(pil_image.convert('RGB')) or pass the PIL image itself."
        )
    return Image.fromarray(np.ascontiguousarray(image), mode="RGB")


def _decode(data: bytes, fmt: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB")
    except Exception as exc:  # Pillow raises many types for bad files
        raise CodecError(f"The {fmt} decoder could not read the file it was given: {exc}") from exc


def _save(im: Image.Image, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    try:
        im.save(buf, format=fmt, **options)
    except Exception as exc:
        raise CodecError(
            f"The {fmt} encoder failed on a {im.size[0]}x{im.size[1]} image with {options}: {exc}"
        ) from exc
    return buf.getvalue()


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or value < lo or (hi is not None and value > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ConfigError(f"{name} must be an integer in {rng}, got {value!r}.")
    return int(value)


def _check_choice(name: str, value: Any, choices: Any) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {sorted(choices)}, got {value!r}.")
    return value


@lru_cache(maxsize=1)
def avif_backend() -> str | None:
    """'pillow' (native AVIF), 'pillow-avif-plugin', or None when no AVIF encoder is installed."""
    from PIL import features

    with warnings.catch_warnings():  # older Pillow warns about the unknown feature name
        warnings.simplefilter("ignore")
        if features.check("avif"):
            return "pillow"
    try:
        import pillow_avif  # noqa: F401  (registers the AVIF plugin with Pillow)
    except ImportError:
        return None
    return "pillow-avif-plugin"


# --------------------------------------------------------------------------- codecs


class Codec(abc.ABC):
    """A standard codec at one setting; `encode` writes a real file and decodes it back."""

    name: str
    setting: str

    @abc.abstractmethod
    def encode(self, image: np.ndarray | Image.Image) -> Encoded:
        """Encode an RGB uint8 HxWx3 image (or any PIL image) and decode it with the real decoder."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.setting})"


class _PillowCodec(Codec):
    format: str

    def _options(self) -> dict[str, Any]:
        raise NotImplementedError

    def _payload(self, data: bytes) -> int:
        raise NotImplementedError

    def encode(self, image: np.ndarray | Image.Image) -> Encoded:
        im = _as_rgb_image(image)
        data = _save(im, self.format, **self._options())
        decoded = _decode(data, self.format)
        if decoded.size != im.size:
            raise CodecError(
                f"{self.format} decoded to {decoded.size}, expected {im.size}; the encoder is broken."
            )
        return Encoded(data, np.asarray(decoded), self._payload(data))


class JPEG(_PillowCodec):
    name, format = "jpeg", "JPEG"

    def __init__(self, quality: int, optimize: bool = True, subsampling: str = "4:2:0") -> None:
        self.quality = _check_int("JPEG quality", quality, 0, 100)
        self.optimize = bool(optimize)
        self.subsampling = _check_choice("JPEG subsampling", subsampling, SUBSAMPLINGS)
        extra = ("" if subsampling == "4:2:0" else f",{subsampling}") + ("" if optimize else ",noopt")
        self.setting = f"q={self.quality}{extra}"

    def _options(self) -> dict[str, Any]:
        return {"quality": self.quality, "optimize": self.optimize, "subsampling": self.subsampling}

    def _payload(self, data: bytes) -> int:
        return jpeg_payload_bytes(data)


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


class _Resampled(Codec):
    """Shared downsample (box filter) / upsample (chosen interpolation) plumbing."""

    def __init__(self, factor: int, interpolation: str) -> None:
        self.factor = _check_int("Downsample factor", factor, 1)
        self.interpolation = _check_choice("Downsample interpolation", interpolation, INTERPOLATIONS)

    def _down(self, im: Image.Image) -> Image.Image:
        return im if self.factor == 1 else im.reduce(self.factor)

    def _up(self, small: Image.Image, size: tuple[int, int]) -> np.ndarray:
        if small.size != size:
            small = small.resize(size, resample=INTERPOLATIONS[self.interpolation])
        return np.asarray(small)


class Downsample(_Resampled):
    """Send fewer pixels, uncompressed: the file is the raw ceil(h/f) x ceil(w/f) x 3 bytes."""

    name = "downsample"

    def __init__(self, factor: int, interpolation: str = "bicubic") -> None:
        super().__init__(factor, interpolation)
        self.setting = f"f={self.factor},{self.interpolation}"

    def encode(self, image: np.ndarray | Image.Image) -> Encoded:
        im = _as_rgb_image(image)
        data = self._down(im).tobytes()
        h, w = math.ceil(im.height / self.factor), math.ceil(im.width / self.factor)
        small = Image.frombytes("RGB", (w, h), data)  # decode from the bytes, as a receiver would
        return Encoded(data, self._up(small, im.size), len(data))


class DownsampleJPEG(_Resampled):
    """Downsample, JPEG-encode the small image, decode it, upsample back."""

    name = "downsample_jpeg"

    def __init__(self, factor: int, quality: int, interpolation: str = "bicubic") -> None:
        super().__init__(factor, interpolation)
        self.jpeg = JPEG(quality)
        self.setting = f"f={self.factor},q={self.jpeg.quality},{self.interpolation}"

    def encode(self, image: np.ndarray | Image.Image) -> Encoded:
        im = _as_rgb_image(image)
        small = self.jpeg.encode(self._down(im))
        return Encoded(small.data, self._up(Image.fromarray(small.decoded), im.size), small.payload_bytes)


class Identity(Codec):
    """The uncompressed reference: raw RGB bytes, h*w*3, decoded == input."""

    name, setting = "none", "raw"

    def encode(self, image: np.ndarray | Image.Image) -> Encoded:
        array = np.array(_as_rgb_image(image))
        data = array.tobytes()
        return Encoded(data, array, len(data))


class BlockAverage(Codec):
    """k x k block means plus a few bits per block saying how much the block varied (luma std).

    The file is one byte string: a 2-byte header (byte 0: k-1 in bits 0-2, level code in bits 3-4
    (0: no side channel, 1/2/3: 2/4/8 levels), side channel deflated in bit 5, small-image format in
    bits 6-7; byte 1: rows and columns cropped from the last block, 4 bits each), then, with a
    side channel only, the small image's length as a LEB128 varint, then the small image (PNG,
    lossless WebP, JPEG or lossy WebP of ``ceil(h/k) x ceil(w/k)`` block means, `Image.reduce`),
    then the side channel: one level per block, row-major, ``log2(levels)`` bits each, packed
    MSB first, stored raw or as raw deflate, whichever is shorter.

    Levels quantise the luma std (BT.601, 0..255) of each block log-uniformly: level 0 is
    ``std < 4`` (flat), levels 1..L-1 split 4..64 into equal log-steps (the last is open above),
    each reconstructed at its step's geometric centre. The decoder upsamples the small image
    (bicubic) and, in each block, adds luma noise (the same to R, G and B, so chroma is unchanged)
    with zero block mean and std ``sqrt(max(s^2 - u^2, 0))``, where ``s`` is the level's std and
    ``u`` the std the upsampled block already has. The noise is a hash of the pixel position, so
    decoding is deterministic. ``payload_bytes`` is the small image's payload (module docstring;
    PNG: its IDAT data) plus the side-channel bytes.
    """

    name = "block_average"
    FORMATS = ("png", "webp_lossless", "jpeg", "webp")
    LEVEL_CODES = {0: 0, 2: 1, 4: 2, 8: 3}
    STD_LO, STD_HI = 4.0, 64.0

    def __init__(self, factor: int, levels: int = 4, small: str = "png", quality: int | None = None) -> None:
        self.factor = _check_int("Block average factor", factor, 2, 8)
        self.levels = _check_choice("Block average levels", levels, self.LEVEL_CODES)
        self.small = _check_choice("Block average small-image format", small, self.FORMATS)
        lossy = small in ("jpeg", "webp")
        if lossy != (quality is not None):
            need = "needs a quality 0..100" if lossy else "is lossless and takes no quality"
            raise ConfigError(f"Block average small-image format {small!r} {need}; got quality={quality!r}.")
        self.quality = _check_int("Block average quality", quality, 0, 100) if lossy else None
        self.setting = f"k={self.factor},levels={self.levels},{small}" + (
            f",q={self.quality}" if lossy else ""
        )

    def _small_codec(self) -> Codec:
        if self.small == "jpeg":
            return JPEG(self.quality)
        return WebP(self.quality, lossless=False) if self.small == "webp" else WebP(100, lossless=True)

    def _edges(self) -> np.ndarray:
        steps = np.geomspace(self.STD_LO, self.STD_HI, self.levels) if self.levels > 1 else np.array([])
        return steps[:-1]  # level l >= 1 when std >= edges[l - 1]

    def _level_std(self) -> np.ndarray:
        """Reconstruction std of each level: 0, then the geometric centres of the log-steps."""
        g = np.geomspace(self.STD_LO, self.STD_HI, self.levels)
        return np.concatenate([[0.0], np.sqrt(g[:-1] * g[1:])]) if self.levels > 1 else np.zeros(1)

    def encode(self, image: np.ndarray | Image.Image) -> Encoded:
        im = _as_rgb_image(image)
        k, (w, h) = self.factor, im.size
        small = im.reduce(k)
        if self.small == "png":
            small_data = _save(small, "PNG", optimize=True)
        else:
            small_data = self._small_codec().encode(small).data
        side = b""
        flags = (k - 1) | (self.LEVEL_CODES[self.levels] << 3) | (self.FORMATS.index(self.small) << 6)
        if self.levels:
            _, std = _block_stats(_luma(np.asarray(im, dtype=np.float64)), k)
            level = np.searchsorted(self._edges(), std, side="right").astype(np.uint8)
            bits = np.unpackbits(level.reshape(-1, 1), axis=1)[:, 8 - int(math.log2(self.levels)) :]
            packed = np.packbits(bits.ravel()).tobytes()
            deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
            deflated = deflater.compress(packed) + deflater.flush()
            side = min(packed, deflated, key=len)
            flags |= 32 if side is deflated else 0
        pad = ((-h) % k) << 4 | (-w) % k
        length = _leb128(len(small_data)) if self.levels else b""
        data = bytes([flags, pad]) + length + small_data + side
        payload = self._small_payload(small_data) + len(side)
        return Encoded(data, self.decode(data), payload)

    def _small_payload(self, data: bytes) -> int:
        if self.small == "png":
            return png_payload_bytes(data)
        return jpeg_payload_bytes(data) if self.small == "jpeg" else webp_payload_bytes(data)

    def decode(self, data: bytes) -> np.ndarray:
        """What a receiver reconstructs from the bytes alone (settings are read from the header)."""
        if len(data) < 3:
            raise CodecError(f"Block-average file of {len(data)} bytes is too short; it is truncated.")
        flags, pad = data[0], data[1]
        k, levels = (flags & 7) + 1, (0, 2, 4, 8)[(flags >> 3) & 3]
        fmt = self.FORMATS[flags >> 6]
        pos, n_small = 2, len(data) - 2
        if levels:
            n_small, pos = _read_leb128(data, 2)
        small = _decode(data[pos : pos + n_small], fmt)
        cw, ch = small.size
        h, w = ch * k - (pad >> 4), cw * k - (pad & 15)
        if not (0 < h and 0 < w and pad >> 4 < k and pad & 15 < k):
            raise CodecError(
                f"Block-average header says crop {pad >> 4}x{pad & 15} for k={k}; the file is corrupt."
            )
        up = np.asarray(small.resize((w, h), resample=Image.Resampling.BICUBIC), dtype=np.float64)
        if not levels:
            return up.astype(np.uint8)
        side = data[pos + n_small :]
        if flags & 32:
            try:
                side = zlib.decompress(side, -15)
            except zlib.error as exc:
                raise CodecError(f"Block-average side channel does not inflate: {exc}") from exc
        nbits = int(math.log2(levels))
        bits = np.unpackbits(np.frombuffer(side, np.uint8))[: ch * cw * nbits]
        if bits.size != ch * cw * nbits:
            raise CodecError(
                f"Block-average side channel has {bits.size} bits, needs {ch * cw * nbits}; truncated."
            )
        level = (bits.reshape(-1, nbits) * (1 << np.arange(nbits - 1, -1, -1))).sum(1).reshape(ch, cw)
        target = BlockAverage(k, levels)._level_std()[level]
        _, have = _block_stats(_luma(up), k)
        add = np.sqrt(np.maximum(target**2 - have**2, 0.0))
        z = _position_noise(h, w)
        z_mean, z_std = _block_stats(z, k)
        ones = np.ones((k, k))
        z = (z - np.kron(z_mean, ones)[:h, :w]) / np.kron(np.where(z_std > 0, z_std, 1.0), ones)[:h, :w]
        out = up + (np.kron(add, ones)[:h, :w] * z)[..., None]
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114])


def _block_stats(a: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) std of each k x k block of a 2-D array; edge blocks use the pixels they have."""
    h, w = a.shape
    ph, pw = (-h) % k, (-w) % k
    mask = np.pad(np.ones((h, w)), ((0, ph), (0, pw)))
    vals = np.pad(a, ((0, ph), (0, pw)))
    shape = ((h + ph) // k, k, (w + pw) // k, k)
    n = mask.reshape(shape).sum((1, 3))
    mean = vals.reshape(shape).sum((1, 3)) / n
    sq = (vals**2).reshape(shape).sum((1, 3)) / n
    return mean, np.sqrt(np.maximum(sq - mean**2, 0.0))


def _position_noise(h: int, w: int) -> np.ndarray:
    """Uniform noise in [-0.5, 0.5) that is a fixed hash (murmur3's finaliser) of each pixel's (row, col)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.uint32)
    v = (y * np.uint32(0x9E3779B1)) ^ (x * np.uint32(0x85EBCA77)) ^ np.uint32(0x5BD1E995)
    v ^= v >> np.uint32(16)
    v *= np.uint32(0x85EBCA6B)
    v ^= v >> np.uint32(13)
    v *= np.uint32(0xC2B2AE35)
    v ^= v >> np.uint32(16)
    return v / 2.0**32 - 0.5


def _leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_leb128(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while pos < len(data):
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos
    raise CodecError("Block-average header: the small-image length runs past the end of the file.")


class JPEGQTable(JPEG):
    """JPEG with custom quantisation tables (e.g. derived from a classifier's frequency sensitivity).

    ``tables`` is a JSON file path or a mapping with ``luma`` and ``chroma`` lists of 64 base
    steps in natural (row-major) order, what Pillow >= 8.3's ``qtables`` and ``im.quantization``
    use; the file's DQT stores them in zigzag order. They are scaled to ``quality`` with libjpeg's
    own rule (`libjpeg_scaled`), so a standard table at quality q gives libjpeg's table at q. The
    default 4:4:4 matches a chroma table measured on full-resolution chroma.
    """

    name = "jpeg_qtable"

    def __init__(
        self, quality: int, tables: str | Mapping, subsampling: str = "4:4:4", optimize: bool = True
    ) -> None:
        super().__init__(quality, optimize, subsampling)
        if isinstance(tables, str | Path):
            try:
                spec = json.loads(Path(tables).read_text())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"jpeg_qtable tables file {tables!s} is unreadable JSON: {exc}") from exc
            label = Path(tables).stem
        elif isinstance(tables, Mapping):
            spec, label = tables, None
        else:
            raise ConfigError(
                f"jpeg_qtable tables must be a JSON path or a mapping, got {type(tables).__name__}."
            )
        base = []
        for key in ("luma", "chroma"):
            t = spec.get(key) if isinstance(spec, Mapping) else None
            ok = isinstance(t, list | tuple) and len(t) == 64
            if not ok or not all(isinstance(v, numbers.Integral) and 1 <= v <= 255 for v in t):
                raise ConfigError(
                    f"jpeg_qtable tables need '{key}': 64 integers in 1..255 (natural order); got {t!r}."
                )
            base.append([int(v) for v in t])
        self.base_tables = base
        self.qtables = [libjpeg_scaled(t, self.quality) for t in base]
        label = label or "custom-" + hashlib.sha1(json.dumps(base).encode()).hexdigest()[:8]
        extra = "" if subsampling == "4:4:4" else f",{subsampling}"
        self.setting = f"q={self.quality},{label}{extra}" + ("" if optimize else ",noopt")

    def _options(self) -> dict[str, Any]:
        return {"qtables": self.qtables, "optimize": self.optimize, "subsampling": self.subsampling}


def libjpeg_scaled(table: list[int], quality: int) -> list[int]:
    """libjpeg's ``jpeg_quality_scaling`` + ``jpeg_add_quant_table`` (baseline: steps clipped to 1..255)."""
    q = min(max(quality, 1), 100)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    return [min(max((v * scale + 50) // 100, 1), 255) for v in table]


# --------------------------------------------------------------------------- factory

_CODECS: dict[str, tuple[type[Codec], str | None]] = {  # name -> (class, parameter a scalar setting sets)
    "jpeg": (JPEG, "quality"),
    "webp": (WebP, "quality"),
    "avif": (AVIF, "quality"),
    "downsample": (Downsample, "factor"),
    "downsample_jpeg": (DownsampleJPEG, None),
    "block_average": (BlockAverage, None),
    "jpeg_qtable": (JPEGQTable, None),
    "none": (Identity, None),
}

DEFAULT_SWEEPS: dict[str, list] = {
    "jpeg": [5, 10, 20, 30, 50, 75, 90, 95],
    "webp": [5, 10, 20, 30, 50, 75, 90],
    "avif": [10, 25, 40, 50, 60, 70, 80, 90],  # below ~25 libavif sizes flatten out at small images
    "downsample": [2, 4, 8],
    "downsample_jpeg": [{"factor": 2, "quality": q} for q in (10, 30, 50, 75, 90)],
    "block_average": [
        {"factor": k, "levels": n, "small": "webp_lossless"} for k in (2, 3, 4) for n in (0, 4)
    ],
    # jpeg_qtable has no default: its tables come from a study, e.g.
    #   {quality: 30, tables: results/frequency_10cls/qtables.json}  (bench/frequency_sensitivity.py)
    "none": [None],
}


def available_codecs() -> list[str]:
    """Codec names `make_codec` accepts here (AVIF only when an AVIF encoder is installed)."""
    return [name for name in _CODECS if name != "avif" or avif_backend() is not None]


def make_codec(name: str, setting: int | float | str | Mapping | None = None) -> Codec:
    """Build a codec from a config entry, e.g. ("jpeg", 75) or ("downsample_jpeg", {"factor": 2, "quality": 50}).

    A scalar sets quality (jpeg/webp/avif) or factor (downsample); a mapping gives keyword arguments.
    """
    if name not in _CODECS:
        raise ConfigError(f"Unknown codec {name!r}; choose one of {list(_CODECS)}.")
    cls, scalar_param = _CODECS[name]
    if cls is Identity:
        if setting not in (None, "raw") and not (isinstance(setting, Mapping) and not setting):
            raise ConfigError(f"Codec 'none' takes no setting (use None or 'raw'), got {setting!r}.")
        return Identity()
    if isinstance(setting, Mapping):
        kwargs = dict(setting)
    elif scalar_param is None:
        example = DEFAULT_SWEEPS[name][0] if DEFAULT_SWEEPS.get(name) else {"quality": 30, "tables": "qtables.json"}
        raise ConfigError(f"Codec {name!r} needs a mapping setting, e.g. {example!r}; got {setting!r}.")
    else:
        value = setting
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ConfigError(
                    f"Codec {name!r} {scalar_param} must be a number, got {setting!r}."
                ) from None
        if isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(f"Codec {name!r} {scalar_param} must be a whole number, got {setting!r}.")
            value = int(value)
        kwargs = {scalar_param: value}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise ConfigError(
            f"Bad settings {kwargs!r} for codec {name!r}: {exc}. Valid keys: {params}."
        ) from exc


# ROI coding builds on JPEG above and registers "roi_jpeg" in _CODECS / DEFAULT_SWEEPS (taskcodec/roi.py)
import taskcodec.roi  # noqa: E402,F401
