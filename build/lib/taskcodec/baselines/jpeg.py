"""JPEG: Pillow's libjpeg, whole-file and scan (payload) bytes, and JPEG with custom quantisation tables."""

from __future__ import annotations

import hashlib
import json
import numbers
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from taskcodec.baselines.base import (
    _check_choice,
    _check_int,
    _PillowCodec,
    register_baseline,
)
from taskcodec.errors import CodecError, ConfigError

SUBSAMPLINGS = ("4:4:4", "4:2:2", "4:2:0")


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


register_baseline("jpeg", JPEG, "quality", [5, 10, 20, 30, 50, 75, 90, 95])
# jpeg_qtable has no default sweep: its tables come from a study, e.g.
#   {quality: 30, tables: results/frequency_10cls/qtables.json}  (bench/frequency_sensitivity.py)
register_baseline("jpeg_qtable", JPEGQTable, None)
