"""Standard codecs as real encoders with real byte counts: the baselines the learned codec must beat.

One module per family (``jpeg``, ``webp_avif``, ``resample``, ``block_average``, ``roi``) on the small
base in :mod:`taskcodec.baselines.base` (``Codec``, ``Encoded``, the registry); this package imports
them all so that :func:`make_codec` knows every family. Nothing here imports back up.

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
import numbers
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from taskcodec.errors import CodecError, ConfigError


@dataclass(frozen=True, eq=False)  # eq=False: comparing ndarrays field-wise is ambiguous
class Encoded:
    """One image through one codec: the real file, what the real decoder makes of it, and its payload."""

    data: bytes
    decoded: np.ndarray
    payload_bytes: int

    @property
    def file_bytes(self) -> int:
        return len(self.data)


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


class Identity(Codec):
    """The uncompressed reference: raw RGB bytes, h*w*3, decoded == input."""

    name, setting = "none", "raw"

    def encode(self, image: np.ndarray | Image.Image) -> Encoded:
        array = np.array(_as_rgb_image(image))
        data = array.tobytes()
        return Encoded(data, array, len(data))


#: name -> (class, the parameter a scalar setting sets, or None when settings must be mappings)
_CODECS: dict[str, tuple[type[Codec], str | None]] = {}
#: the settings evaluate.py sweeps when a baseline is listed without settings
DEFAULT_SWEEPS: dict[str, list] = {}


def register_baseline(name: str, cls: type[Codec], scalar_param: str | None = None, sweep: list | None = None) -> None:
    """Make ``cls`` available to :func:`make_codec` as ``name`` (each family module registers its own)."""
    if name in _CODECS and _CODECS[name][0] is not cls:
        raise ConfigError(f"baseline codec {name!r} is registered twice")
    _CODECS[name] = (cls, scalar_param)
    if sweep is not None:
        DEFAULT_SWEEPS[name] = sweep


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


register_baseline("none", Identity, None, [None])

