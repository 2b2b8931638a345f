"""Container format v1: round trips, and every damaged file is a BitstreamError."""

from __future__ import annotations

import pytest

from taskcodec.bitstream import pack_record
from taskcodec.container import HEADER_BYTES, MAGIC, Entry, read_container, write_container
from taskcodec.errors import BitstreamError

CID = "0123456789abcdef"
ENTRIES = [
    Entry(pack_record(64, 64, b"\x01\x02\x03"), label=7, name="cat/one.jpg"),
    Entry(pack_record(30, 41, b"payload"), label=None, name=None),
    Entry(pack_record(64, 64, b"\x00" * 300), label=123456, name="ünï.png"),
]


def test_round_trip_and_sizes() -> None:
    data = write_container(ENTRIES, CID)
    c = read_container(data)
    assert (c.version, c.codec_id, c.entries, c.total_bytes) == (1, CID, ENTRIES, len(data))
    single = write_container([Entry(pack_record(64, 64, b"xy"))], CID)
    # header 13 + tag 1 + length 1 + record 3 + end tag 1 + count 1 + CRC 4
    assert len(single) == HEADER_BYTES + 1 + 1 + 3 + 1 + 1 + 4 == 24
    assert read_container(write_container([], CID)).entries == []


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: b"", "empty"),
        (lambda d: b"GIF89a" + d[6:], "wrong magic"),
        (lambda d: d[:4] + b"\x02" + d[5:], "container version 2"),
        (lambda d: d[:8], "header"),
        (lambda d: d + b"\x00", "extra bytes"),
        (lambda d: d[:-1], "truncated"),
        (lambda d: d[:HEADER_BYTES], "without its trailer"),
        (lambda d: d[:HEADER_BYTES] + b"\x80" + d[HEADER_BYTES + 1 :], "unknown entry tag"),
    ],
)
def test_damaged_files_name_the_problem(mutate, message) -> None:
    with pytest.raises(BitstreamError, match=message):
        read_container(mutate(write_container(ENTRIES, CID)))


def test_every_truncation_and_bit_flip_is_caught() -> None:
    data = write_container(ENTRIES, CID)
    for n in range(len(data)):
        with pytest.raises(BitstreamError):
            read_container(data[:n])
    for pos in range(len(data)):
        for bit in (0, 3, 7):
            flipped = bytearray(data)
            flipped[pos] ^= 1 << bit
            with pytest.raises(BitstreamError):
                read_container(bytes(flipped))


def test_model_id_mismatch_is_refused() -> None:
    c = read_container(write_container(ENTRIES, CID))
    c.check_codec(CID)
    with pytest.raises(BitstreamError, match="made by model 0123456789abcdef.*decoder-0123456789abcdef.pt"):
        c.check_codec("fedcba9876543210", "x.tc")
    with pytest.raises(BitstreamError, match="16 hex digits"):
        write_container(ENTRIES, "not-hex")
    assert MAGIC == b"\x89TKC"


def test_decoders_refuse_oversized_images_and_latents_before_allocating() -> None:
    from taskcodec.bitstream import MAX_LATENT_SYMBOLS, check_decodable
    from taskcodec.errors import BitstreamError

    check_decodable((64, 64), (32, 16, 16), 64 * 64)  # at the limits: fine
    with pytest.raises(BitstreamError, match="over the decoder's limit"):
        check_decodable((64, 65), (32, 16, 16), 64 * 64)
    with pytest.raises(BitstreamError, match="latent symbols"):
        check_decodable((8, 8), (MAX_LATENT_SYMBOLS + 1, 1, 1), 64 * 64)
