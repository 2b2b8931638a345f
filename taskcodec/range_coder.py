"""A byte-granular range coder for CompressAI's quantised CDF tables.

Why not CompressAI's rANS: its coder writes 32-bit words and flushes a 64-bit state, so every
stream is a multiple of 4 bytes and costs 4-7 bytes more than its entropy. At the tens of bytes
per image a split codec sends, that is a quarter of the file. ``constriction``'s coders are also
32-bit-word granular. This coder is a carry-propagating range coder (the LZMA construction) with
32-bit ``low``/``range`` and byte output, plus a minimal flush: it ends on the value in the final
interval with the most trailing zero bits and drops trailing zero bytes, which the decoder reads
back as zeros. Real minus estimated size is then about one byte per stream.

The interface mirrors CompressAI's ``BufferedRansEncoder``/``RansDecoder``: symbols are coded
against ``cdfs[indexes[i]]`` (``cdf_lengths``, ``offsets`` as in ``EntropyModel``), several
``encode_with_indexes`` calls share one stream, and values outside a CDF's range are escaped and
sent as 4-bit bypass nibbles exactly as CompressAI does. Decoding never reads out of bounds and
never loops unboundedly: corrupt input decodes to wrong symbols or raises :class:`BitstreamError`.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Sequence

import numpy as np

from taskcodec.errors import BitstreamError

PRECISION = 16  # CompressAI's entropy_coder_precision: CDFs sum to 2**16
_TOTAL = 1 << PRECISION
_TOP = 1 << 24
_MASK32 = 0xFFFFFFFF
_BYPASS_BITS = 4
_BYPASS_MAX = (1 << _BYPASS_BITS) - 1
_MAX_BYPASS_NIBBLES = 10  # 40 bits: more than any int32 symbol needs; a larger count is corrupt data


class RangeEncoder:
    """Collects symbols; :meth:`flush` returns the whole stream."""

    def __init__(self) -> None:
        self._low = 0
        self._range = _MASK32
        self._cache = 0
        self._cache_size = 1
        self._out = bytearray()

    def _shift_low(self) -> None:
        if self._low < 0xFF000000 or self._low > _MASK32:
            carry = self._low >> 32
            temp = self._cache
            while True:
                self._out.append((temp + carry) & 0xFF)
                temp = 0xFF
                self._cache_size -= 1
                if not self._cache_size:
                    break
            self._cache = (self._low >> 24) & 0xFF
        self._cache_size += 1
        self._low = (self._low & 0x00FFFFFF) << 8

    def _encode(self, start: int, freq: int) -> None:
        r = self._range >> PRECISION
        self._low += r * start
        self._range = r * freq
        while self._range < _TOP:
            self._range <<= 8
            self._shift_low()

    def encode_with_indexes(
        self,
        symbols: Sequence[int],
        indexes: Sequence[int],
        cdfs: Sequence[Sequence[int]],
        cdf_lengths: Sequence[int],
        offsets: Sequence[int],
    ) -> None:
        """Append ``symbols``; ``symbols[i]`` is coded with the CDF ``cdfs[indexes[i]]``."""
        if len(symbols) != len(indexes):
            raise ValueError(f"{len(symbols)} symbols but {len(indexes)} indexes")
        for sym, idx in zip(symbols, indexes, strict=True):
            cdf = cdfs[idx]
            max_value = cdf_lengths[idx] - 2
            value = sym - offsets[idx]
            raw = 0
            if value < 0:
                raw, value = -2 * value - 1, max_value
            elif value >= max_value:
                raw, value = 2 * (value - max_value), max_value
            self._encode(cdf[value], cdf[value + 1] - cdf[value])
            if value == max_value:  # escape: the raw value follows in 4-bit bypass nibbles
                n = 0
                while raw >> (n * _BYPASS_BITS):
                    n += 1
                count = n
                while count >= _BYPASS_MAX:
                    self._bypass(_BYPASS_MAX)
                    count -= _BYPASS_MAX
                self._bypass(count)
                for j in range(n):
                    self._bypass((raw >> (j * _BYPASS_BITS)) & _BYPASS_MAX)

    def _bypass(self, nibble: int) -> None:
        self._encode(nibble << (PRECISION - _BYPASS_BITS), 1 << (PRECISION - _BYPASS_BITS))

    def flush(self) -> bytes:
        """End the stream with the fewest bytes that still identify the final interval."""
        lo, hi = self._low, self._low + self._range - 1
        for k in range(40, -1, -1):  # the value in [lo, hi] with the most trailing zero bits
            v = (lo + (1 << k) - 1) >> k << k
            if v <= hi:
                self._low = v
                break
        for _ in range(5):
            self._shift_low()
        out = bytes(self._out[1:])  # the first byte is always 0 (the initial cache): never sent
        self.__init__()
        return out.rstrip(b"\x00")  # the decoder reads missing bytes as zeros


class RangeDecoder:
    """Decodes a stream made by :class:`RangeEncoder`, segment by segment in the same order."""

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._pos = 0
        self._range = _MASK32
        self._code = 0
        for _ in range(4):
            self._code = (self._code << 8) | self._next()

    def _next(self) -> int:
        pos = self._pos
        self._pos += 1
        return self._data[pos] if pos < len(self._data) else 0

    @property
    def bytes_read(self) -> int:
        """How far decoding has read (past the end means zero padding was used)."""
        return self._pos

    def _decode(self, cdf: Sequence[int], length: int) -> int:
        r = self._range >> PRECISION
        target = min(self._code // r, _TOTAL - 1)
        s = bisect_right(cdf, target, 0, length) - 1
        s = min(max(s, 0), length - 2)
        start = cdf[s]
        self._code -= r * start
        self._range = r * (cdf[s + 1] - start)
        if self._range <= 0 or self._code < 0:
            raise BitstreamError("corrupt stream: the entropy decoder left its valid range; re-send the data")
        while self._range < _TOP:
            self._range <<= 8
            self._code = ((self._code << 8) | self._next()) & _MASK32
        return s

    def _bypass(self) -> int:
        r = self._range >> PRECISION
        nibble = min(self._code // r >> (PRECISION - _BYPASS_BITS), _BYPASS_MAX)
        self._code -= r * (nibble << (PRECISION - _BYPASS_BITS))
        self._range = r << (PRECISION - _BYPASS_BITS)
        while self._range < _TOP:
            self._range <<= 8
            self._code = ((self._code << 8) | self._next()) & _MASK32
        return nibble

    def decode_stream(
        self,
        indexes: Sequence[int],
        cdfs: Sequence[Sequence[int]],
        cdf_lengths: Sequence[int],
        offsets: Sequence[int],
    ) -> list[int]:
        """The next ``len(indexes)`` symbols, with the same tables the encoder used."""
        out = []
        for idx in indexes:
            cdf, length = cdfs[idx], cdf_lengths[idx]
            max_value = length - 2
            value = self._decode(cdf, length)
            if value == max_value:
                n = 0
                while True:
                    v = self._bypass()
                    n += v
                    if v != _BYPASS_MAX:
                        break
                    if n > _MAX_BYPASS_NIBBLES:
                        break
                if n > _MAX_BYPASS_NIBBLES:
                    raise BitstreamError("corrupt stream: an escaped symbol is impossibly large; re-send the data")
                raw = 0
                for j in range(n):
                    raw |= self._bypass() << (j * _BYPASS_BITS)
                value = -((raw + 1) >> 1) if raw & 1 else (raw >> 1) + max_value
            out.append(value + offsets[idx])
        return out


# -- batches of streams: one stream per image, the compiled kernels where numba is installed -------


class CdfTables:
    """An entropy model's quantised CDF tables, as the Python coder (lists) and the kernels (arrays) want them."""

    def __init__(self, cdfs, cdf_lengths, offsets) -> None:
        self.cdfs = np.ascontiguousarray(np.asarray(cdfs, dtype=np.int32))
        self.cdf_lengths = np.ascontiguousarray(np.asarray(cdf_lengths, dtype=np.int64).reshape(-1))
        self.offsets = np.ascontiguousarray(np.asarray(offsets, dtype=np.int64).reshape(-1))
        if self.cdfs.ndim != 2 or not len(self.cdfs) == len(self.cdf_lengths) == len(self.offsets):
            raise ValueError(f"CDF tables disagree: {self.cdfs.shape} CDFs, {len(self.cdf_lengths)} lengths, "
                             f"{len(self.offsets)} offsets")  # fmt: skip
        if (self.cdf_lengths < 2).any() or (self.cdf_lengths > self.cdfs.shape[1]).any():
            raise ValueError("a CDF length is outside 2..the table width")
        self._lists: tuple | None = None

    @property
    def lists(self) -> tuple[list, list, list]:
        if self._lists is None:
            self._lists = (self.cdfs.tolist(), self.cdf_lengths.tolist(), self.offsets.tolist())
        return self._lists

    def check_indexes(self, indexes) -> None:
        if indexes.size and (indexes.min() < 0 or indexes.max() >= len(self.cdfs)):
            raise ValueError(f"CDF indexes must be in 0..{len(self.cdfs) - 1}")


def compiled_available() -> bool:
    """Whether the numba kernels can be used (``TASKCODEC_CODER=python`` forces the Python coder)."""
    if os.environ.get("TASKCODEC_CODER", "auto") == "python":
        return False
    try:
        import taskcodec.range_coder_numba  # noqa: F401
    except ImportError:
        return False
    return True


class BatchEncoder:
    """One stream per image: :meth:`encode` appends a segment to every stream, :meth:`flush` ends them.

    ``compiled=None`` picks the numba kernels when they are available; both paths write the same
    bytes (the Python :class:`RangeEncoder` is the reference).
    """

    def __init__(self, batch: int, compiled: bool | None = None) -> None:
        self.compiled = compiled_available() if compiled is None else compiled
        self.batch = batch
        if self.compiled:
            self._state = np.zeros((batch, 4), np.int64)
            self._state[:, 1], self._state[:, 3] = _MASK32, 1
            self._out = np.zeros((batch, 64), np.uint8)
            self._pos = np.zeros(batch, np.int64)
        else:
            self._encoders = [RangeEncoder() for _ in range(batch)]

    def encode(self, symbols, indexes, tables: CdfTables) -> None:
        """``symbols`` and ``indexes``: integer arrays ``[batch, n]``."""
        symbols = np.ascontiguousarray(symbols, dtype=np.int64).reshape(self.batch, -1)
        indexes = np.ascontiguousarray(indexes, dtype=np.int64).reshape(self.batch, -1)
        if symbols.shape != indexes.shape:
            raise ValueError(f"{symbols.shape} symbols but {indexes.shape} indexes")
        tables.check_indexes(indexes)
        if not self.compiled:
            for enc, s, i in zip(self._encoders, symbols.tolist(), indexes.tolist(), strict=True):
                enc.encode_with_indexes(s, i, *tables.lists)
            return
        from taskcodec.range_coder_numba import BYTES_PER_SYMBOL, encode_batch

        need = int(self._pos.max()) + BYTES_PER_SYMBOL * symbols.shape[1] + 16
        if need > self._out.shape[1]:
            grown = np.zeros((self.batch, max(need, 2 * self._out.shape[1])), np.uint8)
            grown[:, : self._out.shape[1]] = self._out
            self._out = grown
        encode_batch(symbols, indexes, tables.cdfs, tables.cdf_lengths, tables.offsets, self._state, self._out, self._pos)

    def flush(self) -> list[bytes]:
        """Every image's stream, as :meth:`RangeEncoder.flush` ends it."""
        if not self.compiled:
            return [e.flush() for e in self._encoders]
        from taskcodec.range_coder_numba import flush_batch

        lengths = flush_batch(self._state, self._out, self._pos)
        return [self._out[b, 1 : lengths[b]].tobytes() for b in range(self.batch)]


class BatchDecoder:
    """Reads the streams of :class:`BatchEncoder` back, segment by segment; same choice of path."""

    def __init__(self, payloads: Sequence[bytes], compiled: bool | None = None) -> None:
        self.compiled = compiled_available() if compiled is None else compiled
        self.batch = len(payloads)
        if self.compiled:
            from taskcodec.range_coder_numba import decoder_start

            width = max([len(p) for p in payloads] + [1])
            self._data = np.zeros((self.batch, width), np.uint8)
            for b, p in enumerate(payloads):
                self._data[b, : len(p)] = np.frombuffer(bytes(p), np.uint8)
            self._lengths = np.array([len(p) for p in payloads], np.int64)
            self._state = decoder_start(self._data, self._lengths)
        else:
            self._decoders = [RangeDecoder(p) for p in payloads]

    @property
    def bytes_read(self) -> list[int]:
        """How far each stream has been read (past its end means zero padding was used)."""
        if self.compiled:
            return self._state[:, 2].tolist()
        return [d.bytes_read for d in self._decoders]

    def decode(self, indexes, tables: CdfTables):
        """The next symbols of every stream: int64 array shaped like ``indexes`` (``[batch, n]``)."""
        indexes = np.ascontiguousarray(indexes, dtype=np.int64).reshape(self.batch, -1)
        tables.check_indexes(indexes)
        if not self.compiled:
            rows = [d.decode_stream(i, *tables.lists) for d, i in zip(self._decoders, indexes.tolist(), strict=True)]
            return np.array(rows, dtype=np.int64).reshape(indexes.shape)
        from taskcodec.range_coder_numba import ESCAPE_TOO_LARGE, LEFT_RANGE, decode_batch

        values = np.zeros(indexes.shape, np.int64)
        code = decode_batch(indexes, tables.cdfs, tables.cdf_lengths, tables.offsets, self._data, self._lengths,
                            self._state, values)  # fmt: skip
        if code == LEFT_RANGE:
            raise BitstreamError("corrupt stream: the entropy decoder left its valid range; re-send the data")
        if code == ESCAPE_TOO_LARGE:
            raise BitstreamError("corrupt stream: an escaped symbol is impossibly large; re-send the data")
        return values
