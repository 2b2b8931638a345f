"""Per-image byte streams: what one image costs on the wire, counted whole.

Layout of format version 0 (all integers are unsigned LEB128 varints)::

    version(1 byte = 0) | height | width | len(z) | z bytes | y bytes

``y`` runs to the end of the stream, so its length is implicit. At 64x64 the header is 4 bytes.
The model that made the stream is identified out of band (the exported files' ``codec_id``);
a self-describing file container with a model id is a later format version.
"""

from __future__ import annotations

from dataclasses import dataclass

from taskcodec.errors import BitstreamError

FORMAT_VERSION = 0
MAX_SIDE = 1 << 16


@dataclass(frozen=True)
class ImageStream:
    """One image's coded parts: the y and z strings and the original image size."""

    y: bytes
    z: bytes
    height: int
    width: int


def _put_varint(n: int, out: bytearray) -> None:
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return


def _get_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise BitstreamError("truncated stream: a length field runs past the end; re-send or re-encode the image")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 35:
            raise BitstreamError("corrupt stream: a length field is too long; the data is not a taskcodec stream")


def pack(stream: ImageStream) -> bytes:
    """Serialise one image's strings; ``len()`` of the result is the image's real size in bytes."""
    if not (0 < stream.height <= MAX_SIDE and 0 < stream.width <= MAX_SIDE):
        raise BitstreamError(f"image size {stream.height}x{stream.width} is outside 1..{MAX_SIDE}")
    out = bytearray([FORMAT_VERSION])
    for n in (stream.height, stream.width, len(stream.z)):
        _put_varint(n, out)
    return bytes(out) + stream.z + stream.y


def unpack(data: bytes) -> ImageStream:
    """Parse :func:`pack`'s output, raising :class:`BitstreamError` on anything malformed."""
    if not data:
        raise BitstreamError("empty stream: nothing to decode")
    if data[0] != FORMAT_VERSION:
        raise BitstreamError(
            f"unknown stream format version {data[0]} (this taskcodec reads version {FORMAT_VERSION}); "
            "upgrade taskcodec or re-encode with this version"
        )
    height, pos = _get_varint(data, 1)
    width, pos = _get_varint(data, pos)
    z_len, pos = _get_varint(data, pos)
    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
        raise BitstreamError(f"corrupt stream: image size {height}x{width} is outside 1..{MAX_SIDE}")
    if pos + z_len > len(data):
        raise BitstreamError(
            f"truncated stream: header promises {z_len} bytes of z but only {len(data) - pos} remain"
        )
    return ImageStream(y=data[pos + z_len :], z=data[pos : pos + z_len], height=height, width=width)


def pack_batch(compressed: dict) -> list[bytes]:
    """Turn :meth:`TaskCodec.compress` output into one packed byte string per image."""
    y_strings, z_strings = compressed["strings"]
    h, w = compressed["image_size"]
    return [pack(ImageStream(y=y, z=z, height=h, width=w)) for y, z in zip(y_strings, z_strings, strict=True)]


def unpack_batch(streams: list[bytes]) -> tuple[list[list[bytes]], tuple[int, int]]:
    """Inverse of :func:`pack_batch` for images of one size: ``([y_strings, z_strings], (h, w))``."""
    parsed = [unpack(s) for s in streams]
    sizes = {(p.height, p.width) for p in parsed}
    if len(sizes) != 1:
        raise BitstreamError(f"decode images of one size per batch; got sizes {sorted(sizes)}")
    return [[p.y for p in parsed], [p.z for p in parsed]], sizes.pop()
