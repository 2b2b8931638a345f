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
import inspect
import io
import math
import numbers
import struct
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from taskcodec.errors import CodecError, ConfigError

__all__ = [
    "AVIF",
    "DEFAULT_SWEEPS",
    "JPEG",
    "Codec",
    "Downsample",
    "DownsampleJPEG",
    "Encoded",
    "Identity",
    "WebP",
    "available_codecs",
    "avif_backend",
    "avif_payload_bytes",
    "jpeg_payload_bytes",
    "jpeg_scan_sizes",
    "make_codec",
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


# --------------------------------------------------------------------------- factory

_CODECS: dict[str, tuple[type[Codec], str | None]] = {  # name -> (class, parameter a scalar setting sets)
    "jpeg": (JPEG, "quality"),
    "webp": (WebP, "quality"),
    "avif": (AVIF, "quality"),
    "downsample": (Downsample, "factor"),
    "downsample_jpeg": (DownsampleJPEG, None),
    "none": (Identity, None),
}

DEFAULT_SWEEPS: dict[str, list] = {
    "jpeg": [5, 10, 20, 30, 50, 75, 90, 95],
    "webp": [5, 10, 20, 30, 50, 75, 90],
    "avif": [10, 25, 40, 50, 60, 70, 80, 90],  # below ~25 libavif sizes flatten out at small images
    "downsample": [2, 4, 8],
    "downsample_jpeg": [{"factor": 2, "quality": q} for q in (10, 30, 50, 75, 90)],
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
        raise ConfigError(
            f"Codec {name!r} needs a mapping setting, e.g. {DEFAULT_SWEEPS[name][0]!r}; got {setting!r}."
        )
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
