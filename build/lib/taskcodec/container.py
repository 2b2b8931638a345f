"""Container format v1: the files ``taskcodec compress`` writes (one image, or an archive of many).

A container frames the per-image records of :mod:`taskcodec.bitstream` and names the model that
made them, so a file decoded with another model's decoder is refused instead of misclassified.
The byte layout, with every field's size, is in ``docs/format.md``::

    magic (4) | version (1) | codec id (8)
    entry*:  tag (1) | [label varint] | [name length varint | name] | record length varint | record
    end:     0xFF (1) | record count varint | CRC-32 of all bytes before it (4, big-endian)

A single-image file is a container with one entry. The trailer's count and CRC make truncation,
bit flips and appended garbage an error rather than a silently different image.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from taskcodec.bitstream import get_varint, put_varint
from taskcodec.errors import BitstreamError

MAGIC = b"\x89TKC"
VERSION = 1
HEADER_BYTES = len(MAGIC) + 1 + 8
TAG_LABEL, TAG_NAME, TAG_END = 0x01, 0x02, 0xFF
MAX_RECORD_BYTES = 1 << 24
MAX_NAME_BYTES = 4096
#: containers are read whole; a file larger than this is refused before it is read
MAX_CONTAINER_BYTES = 1 << 30
TRAILER_CRC_BYTES = 4


@dataclass(frozen=True)
class Entry:
    """One image: its record (``pack_record`` bytes), optional class label and optional name."""

    record: bytes
    label: int | None = None
    name: str | None = None


@dataclass(frozen=True)
class Container:
    """A parsed container: format version, the model id, and its entries in file order."""

    version: int
    codec_id: str
    entries: list[Entry]
    total_bytes: int

    def check_codec(self, codec_id: str, where: str = "the file") -> None:
        """Refuse to decode with a model other than the one that wrote the records."""
        if codec_id != self.codec_id:
            raise BitstreamError(
                f"{where} was made by model {self.codec_id}, but this decoder is model {codec_id}: "
                f"decode it with decoder-{self.codec_id}.pt"
            )


def codec_id_bytes(codec_id: str) -> bytes:
    """The 8 raw bytes of a 16-hex-digit model id."""
    try:
        raw = bytes.fromhex(codec_id)
    except (TypeError, ValueError):
        raw = b""
    if len(raw) != 8:
        raise BitstreamError(f"model id must be 16 hex digits, got {codec_id!r}")
    return raw


def header(codec_id: str) -> bytes:
    """The 13-byte file header."""
    return MAGIC + bytes([VERSION]) + codec_id_bytes(codec_id)


def encode_entry(entry: Entry) -> bytes:
    """One entry's bytes (tag, optional label and name, length-framed record)."""
    record = bytes(entry.record)
    if not 0 < len(record) <= MAX_RECORD_BYTES:
        raise BitstreamError(f"a record must be 1..{MAX_RECORD_BYTES} bytes, got {len(record)}")
    out = bytearray([(TAG_LABEL if entry.label is not None else 0) | (TAG_NAME if entry.name is not None else 0)])
    if entry.label is not None:
        put_varint(int(entry.label), out)
    if entry.name is not None:
        name = entry.name.encode("utf-8")
        if len(name) > MAX_NAME_BYTES:
            raise BitstreamError(f"entry name is {len(name)} bytes, over the limit of {MAX_NAME_BYTES}")
        put_varint(len(name), out)
        out += name
    put_varint(len(record), out)
    return bytes(out) + record


class ContainerWriter:
    """Streams entries to a binary file object; :meth:`close` writes the trailer (count and CRC)."""

    def __init__(self, fileobj: BinaryIO, codec_id: str) -> None:
        self._f, self.count, self._crc = fileobj, 0, 0
        self._write(header(codec_id))

    def _write(self, data: bytes) -> None:
        self._f.write(data)
        self._crc = zlib.crc32(data, self._crc)

    def add(self, record: bytes, label: int | None = None, name: str | None = None) -> None:
        self._write(encode_entry(Entry(record, label, name)))
        self.count += 1

    def close(self) -> None:
        end = bytearray([TAG_END])
        put_varint(self.count, end)
        self._write(bytes(end))
        self._f.write(self._crc.to_bytes(TRAILER_CRC_BYTES, "big"))


def write_container(entries: list[Entry], codec_id: str) -> bytes:
    """A whole container in memory."""
    import io

    buffer = io.BytesIO()
    writer = ContainerWriter(buffer, codec_id)
    for e in entries:
        writer.add(e.record, e.label, e.name)
    writer.close()
    return buffer.getvalue()


def looks_like_container(prefix: bytes) -> bool:
    """Whether bytes start with the container magic (for ``taskcodec info``)."""
    return prefix[: len(MAGIC)] == MAGIC


def read_container(data: bytes, where: str = "the file") -> Container:
    """Parse and check a whole container; :class:`BitstreamError` names what is wrong with it."""
    data = bytes(data)
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        what = "empty" if not data else "not a taskcodec container (wrong magic bytes)"
        raise BitstreamError(f"{where} is {what}; pass a .tc/.tca file written by `taskcodec compress`")
    if len(data) < HEADER_BYTES:
        raise BitstreamError(f"{where} is truncated inside its {HEADER_BYTES}-byte header; re-send or re-encode it")
    if data[4] != VERSION:
        raise BitstreamError(
            f"{where} has container version {data[4]}; this taskcodec reads version {VERSION}: "
            "upgrade taskcodec or re-encode the images"
        )
    codec_id = data[5:HEADER_BYTES].hex()
    entries: list[Entry] = []
    pos = HEADER_BYTES
    while True:
        if pos >= len(data):
            raise BitstreamError(f"{where} is truncated: it ends after {len(entries)} records without its trailer")
        tag = data[pos]
        pos += 1
        if tag == TAG_END:
            break
        if tag & ~(TAG_LABEL | TAG_NAME):
            raise BitstreamError(f"{where} is corrupt: unknown entry tag 0x{tag:02x} at byte {pos - 1}")
        label = name = None
        if tag & TAG_LABEL:
            label, pos = get_varint(data, pos, "a label")
        if tag & TAG_NAME:
            size, pos = get_varint(data, pos, "a name length")
            if size > MAX_NAME_BYTES or pos + size > len(data):
                raise BitstreamError(f"{where} is corrupt or truncated: a name of {size} bytes at byte {pos}")
            try:
                name = data[pos : pos + size].decode("utf-8")
            except UnicodeDecodeError as err:
                raise BitstreamError(f"{where} is corrupt: an entry name is not UTF-8 ({err})") from err
            pos += size
        size, pos = get_varint(data, pos, "a record length")
        if not 0 < size <= MAX_RECORD_BYTES or pos + size > len(data):
            raise BitstreamError(
                f"{where} is corrupt or truncated: record {len(entries)} claims {size} bytes at byte {pos}, "
                f"the file has {len(data) - pos} left"
            )
        entries.append(Entry(data[pos : pos + size], label, name))
        pos += size
    count, pos = get_varint(data, pos, "the record count")
    if count != len(entries):
        raise BitstreamError(f"{where} is corrupt: its trailer counts {count} records, it holds {len(entries)}")
    if len(data) - pos != TRAILER_CRC_BYTES:
        problem = "truncated in its trailer" if len(data) - pos < TRAILER_CRC_BYTES else "followed by extra bytes"
        raise BitstreamError(f"{where} is {problem}; re-send or re-encode it")
    if zlib.crc32(data[:pos]) != int.from_bytes(data[pos:], "big"):
        raise BitstreamError(f"{where} is corrupt: its CRC-32 does not match (bit errors in storage or transfer)")
    return Container(data[4], codec_id, entries, len(data))


def read_container_file(path: str | os.PathLike) -> Container:
    """Read and parse a container file, refusing files over :data:`MAX_CONTAINER_BYTES` before reading."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CONTAINER_BYTES:
            raise BitstreamError(f"{path} is {size} bytes, over the {MAX_CONTAINER_BYTES}-byte container limit")
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise BitstreamError(f"{path} does not exist; check the path") from err
    except IsADirectoryError as err:
        raise BitstreamError(f"{path} is a folder, not a container file") from err
    except OSError as err:
        raise BitstreamError(f"cannot read {path}: {err}") from err
    return read_container(data, str(path))


def write_file_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through ``path.part`` and a rename: never a half-written file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
