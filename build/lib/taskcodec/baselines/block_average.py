"""Block averaging with a variance side channel: k x k block means as a small image plus quantised luma texture."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
from PIL import Image

from taskcodec.baselines.base import (
    Codec,
    Encoded,
    _as_rgb_image,
    _check_choice,
    _check_int,
    _decode,
    _save,
    register_baseline,
)
from taskcodec.baselines.jpeg import JPEG, jpeg_payload_bytes
from taskcodec.baselines.webp_avif import WebP, webp_payload_bytes
from taskcodec.errors import CodecError, ConfigError


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


register_baseline("block_average", BlockAverage, None,
                  [{"factor": k, "levels": n, "small": "webp_lossless"} for k in (2, 3, 4) for n in (0, 4)])
