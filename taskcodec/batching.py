"""Many images through a codec: decode in parallel, batch same-size images, keep the input order.

Used by ``taskcodec compress`` and ``taskcodec pack``. Images are read in chunks (bounded memory),
decoded by a thread pool (Pillow releases the GIL), grouped by size inside a chunk and encoded in
batches; torch's intra-op threads use the cores for the networks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from taskcodec.bitstream import unpack_record
from taskcodec.errors import BitstreamError, TaskcodecError
from taskcodec.io import DEFAULT_MAX_PIXELS, read_rgb, to_tensor
from taskcodec.models import TaskCodecBase
from taskcodec.preprocessing import check_native_size

CHUNK_IMAGES = 256


def set_threads(threads: int | None) -> int:
    """Use ``threads`` torch threads (default: every core); returns the number used."""
    n = max(1, threads or os.cpu_count() or 1)
    torch.set_num_threads(n)
    return n


def _encode_same_size(codec: TaskCodecBase, images: list[Tensor], batch_size: int) -> list[bytes]:
    out: list[bytes] = []
    for start in range(0, len(images), batch_size):
        out += codec.encode(torch.stack(images[start : start + batch_size]))
    return out


def encode_sources(
    codec: TaskCodecBase,
    count: int,
    read: Callable[[int], tuple[bytes | str | os.PathLike, str]],
    batch_size: int = 32,
    workers: int = 2,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_done: Callable[[int], None] | None = None,
    size: tuple[int, int] | None = None,
    on_error: Callable[[int, Exception], None] | None = None,
    crop_pct: float = 1.0,
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(index, record)`` for images ``0..count-1`` in order.

    Args:
        codec: an encoder (``load_encoder``) or a full codec, on CPU, in eval mode.
        count: how many images.
        read: ``i -> (bytes or path, name)`` of image ``i``.
        batch_size: images per ``encode`` call (same-size images only).
        workers: threads decoding images.
        max_pixels: per-image pixel limit (see :func:`taskcodec.io.read_rgb`).
        on_done: called with the number of images finished, e.g. a progress bar's ``update``.
        size: (height, width) every image is resized (shorter side) and centre-cropped to, the
            export's preprocessing; ``None`` codes images at their native size (checked to fit).
            ``crop_pct`` < 1 resizes the shorter side to ``floor(size / crop_pct)`` first (timm's crop).
        on_error: when given, an image that cannot be read or taken (a :class:`TaskcodecError`) is
            passed to it with its index and skipped, and the rest go on; otherwise the error stops all.
    """

    def load(i: int) -> Tensor | TaskcodecError:
        source, name = read(i)
        try:
            image = read_rgb(source, name, size=size, crop=True, max_pixels=max_pixels, crop_pct=crop_pct)
            if size is None:
                check_native_size(codec, image.shape[0], image.shape[1], name)
        except TaskcodecError as err:
            if on_error is None:
                raise
            return err
        return to_tensor(image)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, count, CHUNK_IMAGES):
            idx = list(range(start, min(count, start + CHUNK_IMAGES)))
            images = list(pool.map(load, idx))
            groups: dict[tuple[int, int], list[int]] = {}
            for k, image in enumerate(images):
                if isinstance(image, TaskcodecError):
                    on_error(idx[k], image)  # type: ignore[misc]
                    continue
                groups.setdefault(tuple(image.shape[-2:]), []).append(k)
            records: list[bytes | None] = [None] * len(idx)
            for members in groups.values():
                for k, record in zip(members, _encode_same_size(codec, [images[k] for k in members], batch_size), strict=True):
                    records[k] = record
            for k, record in enumerate(records):
                if record is not None:
                    yield idx[k], record
            if on_done is not None:
                on_done(len(idx))


def check_claimed_sizes(records: Sequence[bytes], max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse records claiming more than ``max_pixels`` before any decoding work.

    The decoder itself refuses sizes over ``MAX_DECODE_PIXELS`` (the default here); this check
    applies a caller's own ``--max-pixels``, before any record is decoded.
    """
    for k, record in enumerate(records):
        h, w, _ = unpack_record(record)
        if h * w > max_pixels:
            raise BitstreamError(
                f"record {k} claims a {h}x{w} image, over the limit of {max_pixels} pixels; the data is corrupt, "
                "or raise --max-pixels if you trust it"
            )


def decode_records(
    codec: TaskCodecBase,
    records: Sequence[bytes],
    batch_size: int = 256,
    key: str = "logits",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Tensor:
    """``codec.decode`` in batches; returns ``key`` ("logits", "x_hat" or "y_hat") stacked.

    Records claiming more than ``max_pixels`` are refused first; any failure inside the decoder on
    a corrupt record surfaces as a :class:`BitstreamError`.
    """
    check_claimed_sizes(records, max_pixels)
    parts = []
    for start in range(0, len(records), batch_size):
        chunk = list(records[start : start + batch_size])
        try:
            out = codec.decode(chunk)
        except BitstreamError:
            raise
        except (RuntimeError, ValueError, IndexError, OverflowError, MemoryError) as err:
            raise BitstreamError(f"cannot decode records {start}..{start + len(chunk) - 1}: {err}; the data is corrupt") from err
        if key not in out:
            raise BitstreamError(f"the decoder gives no {key!r} for these records (mixed image sizes?)")
        parts.append(out[key])
    return torch.cat(parts)


@torch.no_grad()
def decode_latents(codec: TaskCodecBase, records: Sequence[bytes]) -> Tensor:
    """``y_hat`` of same-size records from the entropy stage alone (no synthesis, no classifier).

    What the server side trains on: the decoded latents, exactly as ``decompress`` rebuilds them.

    Raises:
        BitstreamError: on corrupt records, mixed image sizes, or a latent over the decoder's limit.
    """
    parsed = [unpack_record(r) for r in records]
    sizes = {(h, w) for h, w, _ in parsed}
    if len(sizes) != 1:
        raise BitstreamError(f"latents of one batch must share an image size, got {sorted(sizes)}")
    return codec.decode_latents([p for _, _, p in parsed], sizes.pop())
