"""The ``label`` row: the client runs the reference and sends its answer, not the image.

It is the floor every split codec must beat. A client that can afford the whole classifier (100%
of its MACs) sends its top-1 class, range-coded with a uniform distribution over the classes
(log2 K bits, about 0.42 B for 10 classes) in the same per-image record as every codec (a size
byte, then the payload), so its bytes are counted exactly like a codec's. Its top-1 is the
reference's by construction, and decoding the record gives the class back.
"""

from __future__ import annotations

from taskcodec.bitstream import pack_record, unpack_record
from taskcodec.errors import BitstreamError, ConfigError
from taskcodec.range_coder import PRECISION, RangeDecoder, RangeEncoder


class LabelCodec:
    """Records of one class index each, coded with a uniform CDF over ``num_classes`` (+ CompressAI's escape slot)."""

    def __init__(self, num_classes: int) -> None:
        if not 1 <= num_classes <= (1 << PRECISION) - 1:
            raise ConfigError(f"num_classes must be in 1..{(1 << PRECISION) - 1}, got {num_classes}")
        self.num_classes = num_classes
        total, k = 1 << PRECISION, num_classes + 1  # the last slot is the (never used) escape
        cdf = [i * (total - 1) // num_classes for i in range(num_classes + 1)] + [total]
        self._tables = ([cdf], [k + 1], [0])

    def encode(self, label: int, image_size: tuple[int, int] = (64, 64)) -> bytes:
        if not 0 <= label < self.num_classes:
            raise ConfigError(f"label {label} is outside 0..{self.num_classes - 1}")
        enc = RangeEncoder()
        enc.encode_with_indexes([label], [0], *self._tables)
        return pack_record(*image_size, enc.flush())

    def decode(self, record: bytes) -> int:
        _, _, payload = unpack_record(record)
        dec = RangeDecoder(payload)
        label = dec.decode_stream([0], *self._tables)[0]
        if not 0 <= label < self.num_classes or dec.bytes_read < len(payload):
            raise BitstreamError("corrupt label record: not a class index of this model; re-send the data")
        return label
