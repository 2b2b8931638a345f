"""Per-image records: what one image costs on the wire, counted whole.

A record is what a client sends per image and what every rate figure counts::

    size code (1 byte) | [height varint | width varint, only when size code = 0xFF] | payload

The size code names a common image size (:data:`COMMON_SIZES`, 64x64 is code 0); any other size
is spelled out as two unsigned LEB128 varints. The payload is one range-coded stream (for a
hyperprior, ``z`` then ``y``) that runs to the end of the record, so a record has no length field:
the transport (a message, or an archive record's length) frames it. At 64x64 the header is one
byte. The model that made a record is named by the container (:mod:`taskcodec.container`) or out
of band, never per image: at tens of bytes per image a model id would cost as much as the image.
"""

from __future__ import annotations

from taskcodec.errors import BitstreamError

MAX_SIDE = 1 << 16
#: decoders refuse records whose latent would exceed this many symbols per image, before any tensor
#: is made (a few header bytes must never make a decoder allocate or loop for long); clients refuse
#: to write such records
MAX_LATENT_SYMBOLS = 1 << 21
EXPLICIT_SIZE = 0xFF
#: size code -> (height, width); append only, never reorder (records in the wild depend on it)
COMMON_SIZES: tuple[tuple[int, int], ...] = (
    (64, 64), (32, 32), (28, 28), (96, 96), (128, 128), (224, 224), (256, 256), (299, 299),
    (384, 384), (512, 512),
)  # fmt: skip
_CODE_OF = {size: code for code, size in enumerate(COMMON_SIZES)}


def put_varint(n: int, out: bytearray) -> None:
    """Append ``n >= 0`` as an unsigned LEB128 varint."""
    if n < 0:
        raise BitstreamError(f"cannot write a negative length {n}")
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return


def get_varint(data: bytes, pos: int, what: str = "a length field") -> tuple[int, int]:
    """Read a varint at ``pos``: ``(value, next position)``; at most 5 bytes (32 bits)."""
    value = shift = 0
    while True:
        if pos >= len(data):
            raise BitstreamError(f"truncated data: {what} runs past the end; re-send or re-encode it")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 35:
            raise BitstreamError(f"corrupt data: {what} is longer than 5 bytes; the data is not a taskcodec stream")


def check_size(height: int, width: int) -> None:
    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
        raise BitstreamError(f"image size {height}x{width} is outside 1..{MAX_SIDE}; the record is corrupt")


def pack_record(height: int, width: int, payload: bytes) -> bytes:
    """One image's record; ``len()`` of the result is the image's real size in bytes."""
    check_size(height, width)
    code = _CODE_OF.get((height, width))
    if code is not None:
        return bytes([code]) + payload
    out = bytearray([EXPLICIT_SIZE])
    put_varint(height, out)
    put_varint(width, out)
    return bytes(out) + payload


def unpack_record(data: bytes) -> tuple[int, int, bytes]:
    """``(height, width, payload)`` of :func:`pack_record`'s output; :class:`BitstreamError` if malformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"a record must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise BitstreamError("empty record: nothing to decode (every record has at least its size byte)")
    code = data[0]
    if code == EXPLICIT_SIZE:
        height, pos = get_varint(data, 1, "the image height")
        width, pos = get_varint(data, pos, "the image width")
    elif code < len(COMMON_SIZES):
        (height, width), pos = COMMON_SIZES[code], 1
    else:
        raise BitstreamError(f"corrupt record: unknown image size code {code}; is this a taskcodec record?")
    check_size(height, width)
    return height, width, data[pos:]


def check_decodable(image_size: tuple[int, int], latent_shape: tuple[int, int, int], max_pixels: int) -> None:
    """Refuse a record whose image or latent is over the decoders' limits, before any array is made.

    Both decoders (PyTorch and the torch-free server) call this, so a few header bytes can never make
    either allocate or loop for long.

    Raises:
        BitstreamError: naming the size and the limits.
    """
    (height, width), (c, h, w) = image_size, latent_shape
    if height * width > max_pixels or c * h * w > MAX_LATENT_SYMBOLS:
        raise BitstreamError(
            f"a {height}x{width} image (latent {tuple(latent_shape)}) is over the decoder's limit of {max_pixels} "
            f"pixels and {MAX_LATENT_SYMBOLS} latent symbols; the record is corrupt or the image is too large for "
            "this codec"
        )


def payloads_by_size(records: list[bytes]) -> dict[tuple[int, int], tuple[list[int], list[bytes]]]:
    """``(height, width) -> (indexes, payloads)`` of ``records``, in order: each size is decoded as one batch.

    Raises:
        BitstreamError: when there are no records, or one does not parse.
    """
    if not records:
        raise BitstreamError("no records to decode")
    groups: dict[tuple[int, int], tuple[list[int], list[bytes]]] = {}
    for i, record in enumerate(records):
        h, w, payload = unpack_record(record)
        idx, payloads = groups.setdefault((h, w), ([], []))
        idx.append(i)
        payloads.append(payload)
    return groups
