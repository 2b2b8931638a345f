"""The byte-granular range coder: exact round trips on random CDFs and symbols, overhead, corruption."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskcodec.errors import BitstreamError
from taskcodec.range_coder import (
    PRECISION,
    BatchDecoder,
    BatchEncoder,
    CdfTables,
    RangeDecoder,
    RangeEncoder,
    compiled_available,
)


def quantised_cdf(weights: list[float]) -> list[int]:
    """A CompressAI-style CDF: every symbol (and the escape) gets at least one count of 2**16."""
    total = 1 << PRECISION
    n = len(weights)
    s = sum(weights)
    freqs = [max(1, int(w / s * (total - n))) for w in weights]
    freqs[freqs.index(max(freqs))] += total - sum(freqs)
    cdf = [0]
    for f in freqs:
        cdf.append(cdf[-1] + f)
    return cdf


tables = st.lists(
    st.lists(st.floats(min_value=1e-6, max_value=1.0), min_size=2, max_size=24), min_size=1, max_size=4
).map(lambda ws: [quantised_cdf(w) for w in ws])


@settings(max_examples=150, deadline=None)
@given(cdfs=tables, data=st.data())
def test_random_cdfs_and_symbols_round_trip(cdfs, data) -> None:
    lengths = [len(c) for c in cdfs]
    offsets = data.draw(st.lists(st.integers(-8, 8), min_size=len(cdfs), max_size=len(cdfs)))
    segments = []
    enc = RangeEncoder()
    for _ in range(data.draw(st.integers(1, 3))):
        idx = data.draw(st.lists(st.integers(0, len(cdfs) - 1), max_size=80))
        # in-range symbols and far out-of-range ones (escaped as bypass nibbles)
        syms = [data.draw(st.integers(-3000, 3000)) for _ in idx]
        enc.encode_with_indexes(syms, idx, cdfs, lengths, offsets)
        segments.append((syms, idx))
    stream = enc.flush()
    dec = RangeDecoder(stream)
    for syms, idx in segments:
        assert dec.decode_stream(idx, cdfs, lengths, offsets) == syms
    assert dec.bytes_read >= len(stream)


def test_overhead_is_about_one_byte() -> None:
    rng = random.Random(0)
    over = []
    for _ in range(100):
        cdf = quantised_cdf([rng.random() ** 3 + 1e-6 for _ in range(12)])
        syms, est = [], 0.0
        for _ in range(rng.randint(10, 300)):
            u = rng.randrange(cdf[-2])
            v = min(next(k for k in range(len(cdf) - 1) if cdf[k + 1] > u), len(cdf) - 3)
            syms.append(v)
            est += -math.log2((cdf[v + 1] - cdf[v]) / (1 << PRECISION))
        enc = RangeEncoder()
        enc.encode_with_indexes(syms, [0] * len(syms), [cdf], [len(cdf)], [0])
        stream = enc.flush()
        assert RangeDecoder(stream).decode_stream([0] * len(syms), [cdf], [len(cdf)], [0]) == syms
        over.append(len(stream) - est / 8)
    assert sum(over) / len(over) < 1.0  # rANS in CompressAI: 4-7 B per stream
    assert max(over) < 2.0


def test_empty_stream_and_garbage_never_hang_or_crash() -> None:
    cdf = quantised_cdf([1.0, 2.0, 3.0])
    assert RangeEncoder().flush() == b""
    rng = random.Random(1)
    for _ in range(200):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        try:
            out = RangeDecoder(junk).decode_stream([0] * 50, [cdf], [len(cdf)], [0])
            assert len(out) == 50
        except BitstreamError:
            pass


def test_bypass_count_is_bounded() -> None:
    cdf = quantised_cdf([1.0, 1.0])  # symbols 0, escape
    enc = RangeEncoder()
    enc.encode_with_indexes([1 << 60], [0], [cdf], [len(cdf)], [0])  # an absurdly large escaped value
    with pytest.raises(BitstreamError, match="impossibly large"):
        RangeDecoder(enc.flush()).decode_stream([0], [cdf], [len(cdf)], [0])


# -- the compiled path (numba kernels over batches) against the Python reference coder ------------

def _tables_of(cdfs: list[list[int]], offsets: list[int]) -> CdfTables:
    width = max(len(c) for c in cdfs)
    arr = np.zeros((len(cdfs), width), np.int32)
    for k, c in enumerate(cdfs):
        arr[k, : len(c)] = c
    return CdfTables(arr, [len(c) for c in cdfs], offsets)


@settings(max_examples=150, deadline=None)
@given(cdfs=tables, data=st.data())
def test_compiled_coder_writes_the_python_coders_bytes(cdfs, data) -> None:
    """Byte-identical streams from both paths, and each path reads the other's streams back."""
    offsets = data.draw(st.lists(st.integers(-8, 8), min_size=len(cdfs), max_size=len(cdfs)))
    tabs = _tables_of(cdfs, offsets)
    batch = data.draw(st.integers(1, 4))
    segments = []
    for _ in range(data.draw(st.integers(1, 3))):
        n = data.draw(st.integers(0, 60))
        idx = np.array(data.draw(st.lists(st.integers(0, len(cdfs) - 1), min_size=batch * n, max_size=batch * n)))
        # mostly in range, some far outside (escaped), up to the int32 extremes CompressAI can produce
        syms = np.array(data.draw(st.lists(st.one_of(st.integers(-4, 24), st.integers(-(2**31), 2**31 - 1)),
                                           min_size=batch * n, max_size=batch * n)))  # fmt: skip
        segments.append((syms.reshape(batch, n), idx.reshape(batch, n)))
    streams = []
    for compiled in (False, True):
        enc = BatchEncoder(batch, compiled=compiled)
        for syms, idx in segments:
            enc.encode(syms, idx, tabs)
        streams.append(enc.flush())
    assert streams[0] == streams[1]
    for compiled in (False, True):
        dec = BatchDecoder(streams[0], compiled=compiled)
        for syms, idx in segments:
            assert np.array_equal(dec.decode(idx, tabs), syms)
        assert all(r >= len(s) for r, s in zip(dec.bytes_read, streams[0], strict=True))


def test_compiled_decoder_fails_like_the_python_one_on_garbage() -> None:
    """Random bytes decode to the same symbols, or the same BitstreamError, on both paths."""
    tabs = _tables_of([quantised_cdf([1.0, 2.0, 3.0]), quantised_cdf([1.0, 1.0])], [0, -1])
    rng = random.Random(2)
    idx = np.array([[rng.randrange(2) for _ in range(50)]])
    for _ in range(300):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        results = []
        for compiled in (False, True):
            try:
                results.append(BatchDecoder([junk], compiled=compiled).decode(idx, tabs).tolist())
            except BitstreamError as e:
                results.append(str(e))
        assert results[0] == results[1]


def test_coder_choice_follows_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("TASKCODEC_CODER", "python")
    assert not BatchEncoder(1).compiled and not compiled_available()
    monkeypatch.setenv("TASKCODEC_CODER", "auto")
    assert BatchEncoder(1).compiled  # numba is a dependency


def test_tables_refuse_indexes_out_of_range() -> None:
    tabs = _tables_of([quantised_cdf([1.0, 2.0])], [0])
    with pytest.raises(ValueError, match="CDF indexes"):
        BatchEncoder(1, compiled=True).encode(np.array([[0]]), np.array([[1]]), tabs)


def test_one_pass_scale_indexes_equal_compressais() -> None:
    """taskcodec's bucketize lookup gives GaussianConditional.build_indexes' indexes, ties and bounds included."""
    import torch
    from compressai.entropy_models import GaussianConditional
    from compressai.models.base import get_scale_table

    from taskcodec.models.entropy import scale_indexes

    gc = GaussianConditional(None)
    gc.update_scale_table(get_scale_table())
    table = gc.scale_table
    scales = torch.cat([torch.rand(5000) * 300, torch.rand(5000) * 0.2, table, table * (1 + 1e-7), table * (1 - 1e-7),
                        torch.tensor([0.0, -1.0, 1e9])]).reshape(1, -1, 1, 1)  # fmt: skip
    assert torch.equal(scale_indexes(gc, scales), gc.build_indexes(scales))
