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

from bisect import bisect_right
from collections.abc import Sequence

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
