"""The compiled path of the byte-granular range coder: numba kernels over a whole batch of streams.

These kernels are line-for-line the arithmetic of :mod:`taskcodec.range_coder` (which stays the
reference implementation and the fallback), so they write byte-identical streams and read them
back identically; ``tests/test_range_coder.py`` proves it on random CDFs and symbols. Each kernel
codes one segment (e.g. ``z``, then ``y``) of every image of a batch in one call, with the
encoder state kept in an int64 array ``[B, 4]`` (low, range, cache, cache size) and the output in
a uint8 array ``[B, capacity]``, so Python runs once per batch, not once per symbol.

numba compiles on first use (about a second; ``cache=True`` keeps the machine code next to this
file for later processes).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_PRECISION = 16
_TOTAL = 1 << _PRECISION
_TOP = 1 << 24
_MASK32 = 0xFFFFFFFF
_BYPASS_BITS = 4
_BYPASS_MAX = 15
_MAX_BYPASS_NIBBLES = 10

#: worst case bytes one symbol can add to a stream (two from the symbol, the rest from escape nibbles)
BYTES_PER_SYMBOL = 24

#: decoder error codes (the Python wrapper turns them into BitstreamError)
OK, LEFT_RANGE, ESCAPE_TOO_LARGE = 0, 1, 2


@njit(cache=True, inline="always")
def _shift_low(low, cache, csize, out, b, p):
    """LZMA's carry-propagating byte output; the state lives in locals (registers), not arrays."""
    if low < 0xFF000000 or low > _MASK32:
        carry = low >> 32
        temp = cache
        while True:
            out[b, p] = (temp + carry) & 0xFF
            p += 1
            temp = 0xFF
            csize -= 1
            if csize == 0:
                break
        cache = (low >> 24) & 0xFF
    csize += 1
    low = (low & 0x00FFFFFF) << 8
    return low, cache, csize, p


@njit(cache=True, inline="always")
def _encode(low, rng, cache, csize, out, b, p, start, freq):
    r = rng >> _PRECISION
    low += r * start
    rng = r * freq
    while rng < _TOP:
        rng <<= 8
        low, cache, csize, p = _shift_low(low, cache, csize, out, b, p)
    return low, rng, cache, csize, p


_BYPASS_FREQ = 1 << (_PRECISION - _BYPASS_BITS)


@njit(cache=True)
def encode_batch(symbols, indexes, cdfs, cdf_lengths, offsets, state, out, pos):
    """Append ``symbols[b]`` (coded with ``cdfs[indexes[b]]``) to stream ``b`` for every ``b``."""
    for b in range(symbols.shape[0]):
        low, rng, cache, csize, p = state[b, 0], state[b, 1], state[b, 2], state[b, 3], pos[b]
        for i in range(symbols.shape[1]):
            idx = indexes[b, i]
            max_value = cdf_lengths[idx] - 2
            value = np.int64(symbols[b, i]) - offsets[idx]
            raw = np.int64(0)
            if value < 0:
                raw = -2 * value - 1
                value = max_value
            elif value >= max_value:
                raw = 2 * (value - max_value)
                value = max_value
            lo = np.int64(cdfs[idx, value])
            low, rng, cache, csize, p = _encode(low, rng, cache, csize, out, b, p, lo, np.int64(cdfs[idx, value + 1]) - lo)
            if value == max_value:  # escape: a nibble count (15 = "and more"), then the raw value's nibbles
                n = 0
                while n < 16 and raw >> (n * _BYPASS_BITS):  # (a shift by 64 is undefined in LLVM)
                    n += 1
                count = n
                while count >= _BYPASS_MAX:
                    low, rng, cache, csize, p = _encode(low, rng, cache, csize, out, b, p, _BYPASS_MAX * _BYPASS_FREQ, _BYPASS_FREQ)
                    count -= _BYPASS_MAX
                low, rng, cache, csize, p = _encode(low, rng, cache, csize, out, b, p, count * _BYPASS_FREQ, _BYPASS_FREQ)
                for j in range(n):
                    nibble = (raw >> (j * _BYPASS_BITS)) & _BYPASS_MAX
                    low, rng, cache, csize, p = _encode(low, rng, cache, csize, out, b, p, nibble * _BYPASS_FREQ, _BYPASS_FREQ)
        state[b, 0], state[b, 1], state[b, 2], state[b, 3], pos[b] = low, rng, cache, csize, p


@njit(cache=True)
def flush_batch(state, out, pos):
    """End every stream as ``RangeEncoder.flush`` does; returns each stream's length after trimming."""
    lengths = np.zeros(state.shape[0], np.int64)
    for b in range(state.shape[0]):
        low, rng, cache, csize, p = state[b, 0], state[b, 1], state[b, 2], state[b, 3], pos[b]
        hi = low + rng - 1
        for k in range(40, -1, -1):  # the value in [low, hi] with the most trailing zero bits
            v = ((low + (np.int64(1) << k) - 1) >> k) << k
            if v <= hi:
                low = v
                break
        for _ in range(5):
            low, cache, csize, p = _shift_low(low, cache, csize, out, b, p)
        state[b, 0], state[b, 2], state[b, 3], pos[b] = low, cache, csize, p
        n = p
        while n > 1 and out[b, n - 1] == 0:
            n -= 1
        lengths[b] = n  # bytes out[b, 1:n] are the stream (the first is the initial cache, always 0)
    return lengths


@njit(cache=True, inline="always")
def _next(data, length, b, st):
    p = st[b, 2]
    st[b, 2] = p + 1
    if p < length:
        return np.int64(data[b, p])
    return np.int64(0)


@njit(cache=True, inline="always")
def _normalise(data, length, b, st):
    while st[b, 0] < _TOP:
        st[b, 0] = st[b, 0] << 8
        st[b, 1] = ((st[b, 1] << 8) | _next(data, length, b, st)) & _MASK32


@njit(cache=True, inline="always")
def _bypass(data, length, b, st):
    r = st[b, 0] >> _PRECISION
    nibble = (st[b, 1] // r) >> (_PRECISION - _BYPASS_BITS)
    if nibble > _BYPASS_MAX:
        nibble = _BYPASS_MAX
    st[b, 1] -= r * (nibble << (_PRECISION - _BYPASS_BITS))
    st[b, 0] = r << (_PRECISION - _BYPASS_BITS)
    _normalise(data, length, b, st)
    return nibble


@njit(cache=True)
def decoder_start(data, lengths):
    """The decoder state ``[B, 3]`` (range, code, position) after reading each stream's first 4 bytes."""
    st = np.zeros((data.shape[0], 3), np.int64)
    for b in range(data.shape[0]):
        st[b, 0] = _MASK32
        for _ in range(4):
            st[b, 1] = (st[b, 1] << 8) | _next(data, lengths[b], b, st)
    return st


@njit(cache=True)
def decode_batch(indexes, cdfs, cdf_lengths, offsets, data, lengths, st, values):
    """The next ``indexes.shape[1]`` symbols of every stream into ``values``; returns an error code."""
    for b in range(indexes.shape[0]):
        length = lengths[b]
        for i in range(indexes.shape[1]):
            idx = indexes[b, i]
            clen = cdf_lengths[idx]
            max_value = clen - 2
            r = st[b, 0] >> _PRECISION
            target = st[b, 1] // r
            if target > _TOTAL - 1:
                target = _TOTAL - 1
            lo, hi = 0, clen  # bisect_right(cdf, target, 0, clen) - 1
            while lo < hi:
                mid = (lo + hi) >> 1
                if target < cdfs[idx, mid]:
                    hi = mid
                else:
                    lo = mid + 1
            s = lo - 1
            if s < 0:
                s = 0
            if s > clen - 2:
                s = clen - 2
            start = np.int64(cdfs[idx, s])
            st[b, 1] -= r * start
            st[b, 0] = r * (np.int64(cdfs[idx, s + 1]) - start)
            if st[b, 0] <= 0 or st[b, 1] < 0:
                return LEFT_RANGE
            _normalise(data, length, b, st)
            value = np.int64(s)
            if value == max_value:  # escape: a nibble count (15 means "and more"), then the raw nibbles
                n = 0
                while True:
                    nibble = _bypass(data, length, b, st)
                    n += nibble
                    if nibble != _BYPASS_MAX or n > _MAX_BYPASS_NIBBLES:
                        break
                if n > _MAX_BYPASS_NIBBLES:
                    return ESCAPE_TOO_LARGE
                raw = np.int64(0)
                for j in range(n):
                    raw |= _bypass(data, length, b, st) << (j * _BYPASS_BITS)
                if raw & 1:
                    value = -((raw + 1) >> 1)
                else:
                    value = (raw >> 1) + max_value
            values[b, i] = value + offsets[idx]
    return OK
