"""The Python API: a client that compresses images to bytes, a server that classifies those bytes.

    import taskcodec
    client = taskcodec.load_client("export/encoder-<id>.pt")
    data = client.compress(["cat.jpg", "dog.png"])          # one container (bytes), as `compress --archive`
    server = taskcodec.load_server("export/decoder-<id>.pt")
    server.classify(data)                                    # ["tabby", "golden retriever"]

Both ends read their export once and apply what it records: the client the input preprocessing
(:mod:`taskcodec.preprocessing`), the server the class names. The bytes are the container format
of ``taskcodec compress`` (``docs/format.md``), so files from the CLI and from here are
interchangeable, and a server refuses bytes written by another model.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from taskcodec.errors import DataError

#: what ``compress`` takes per image: a path, encoded bytes, a Pillow image or a uint8 H x W x 3 array
ImageLike = str | os.PathLike | bytes | np.ndarray | Any


def _as_rgb(image: ImageLike, size: tuple[int, int] | None, k: int, crop_pct: float = 1.0) -> np.ndarray:
    from PIL import Image

    from taskcodec.io import read_rgb

    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise DataError(f"image {k}: arrays must be uint8 H x W x 3 RGB, got {image.dtype} {list(image.shape)}")
        if size is None:
            return image
        image = Image.fromarray(image)
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")  # through the one image decoder: modes, alpha and size limits as for files
        image = buf.getvalue()
    if isinstance(image, (bytes, bytearray)):
        return read_rgb(bytes(image), f"image {k}", size=size, crop=True, crop_pct=crop_pct)
    if isinstance(image, (str, os.PathLike)):
        return read_rgb(image, str(image), size=size, crop=True, crop_pct=crop_pct)
    raise DataError(f"image {k}: expected a path, image bytes, a PIL image or a uint8 array, got {type(image).__name__}")


class Client:
    """An exported encoder: images in, one container of records out."""

    def __init__(self, path: str | os.PathLike, native_size: bool = False) -> None:
        from taskcodec.export import load_encoder
        from taskcodec.preprocessing import crop_fraction, input_size

        self.codec, self.meta = load_encoder(path)
        self.codec_id: str = self.meta["codec_id"]
        self.input_size = None if native_size else input_size(self.meta)
        self.crop_pct = crop_fraction(self.meta)

    def compress(self, images: ImageLike | Sequence[ImageLike], names: Sequence[str] | None = None) -> bytes:
        """One container holding a record per image (in order); names are stored when given."""
        import torch

        from taskcodec.container import Entry, write_container
        from taskcodec.io import encode_by_size, to_tensor
        from taskcodec.preprocessing import check_native_size

        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        if not items:
            raise DataError("no images to compress")
        if names is not None and len(names) != len(items):
            raise DataError(f"{len(names)} names for {len(items)} images")
        arrays = [_as_rgb(im, self.input_size, k, self.crop_pct) for k, im in enumerate(items)]
        if self.input_size is None:
            for k, a in enumerate(arrays):
                check_native_size(self.codec, a.shape[0], a.shape[1], f"image {k}")
        with torch.no_grad():
            records = encode_by_size(arrays, lambda batch: self.codec.encode(to_tensor(batch)))
        return write_container([Entry(r, name=None if names is None else names[k]) for k, r in enumerate(records)],
                               self.codec_id)  # fmt: skip


class Server:
    """An exported decoder: container bytes in, labels out."""

    def __init__(self, path: str | os.PathLike) -> None:
        from taskcodec.export import load_decoder

        self.codec, self.meta = load_decoder(path)
        self.codec_id: str = self.meta["codec_id"]

    def predict(self, data: bytes | os.PathLike | str, topk: int = 1) -> list[dict]:
        """Per image: ``{"name", "top": [{"class", "name", "words", "probability"}, ...]}``, best first."""
        from taskcodec.batching import decode_records
        from taskcodec.container import read_container
        from taskcodec.report import label_rows

        if isinstance(data, (str, os.PathLike)):
            where, data = str(data), Path(data).read_bytes()
        else:
            where = "the data"
        container = read_container(data, where)
        container.check_codec(self.codec_id, where)
        if not container.entries:
            return []
        logits = decode_records(self.codec, [e.record for e in container.entries])
        rows = [{"name": e.name, "label": e.label} for e in container.entries]
        return label_rows(rows, logits, self.meta, topk)

    def classify(self, data: bytes | os.PathLike | str) -> list[str]:
        """The top-1 class of every image, as the export names it (words, else class id, else index)."""
        return [row["top"][0]["words"] for row in self.predict(data)]


def load_client(path: str | os.PathLike, native_size: bool = False) -> Client:
    """The client of an ``encoder-<id>.pt`` export (``native_size`` skips its preprocessing)."""
    return Client(path, native_size)


def load_server(path: str | os.PathLike) -> Server:
    """The server of a ``decoder-<id>.pt`` export."""
    return Server(path)
