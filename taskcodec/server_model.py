"""What ``taskcodec serve`` runs: records in, logits out, from either kind of exported server.

* ``server-<id>.onnx`` (+ ``server-<id>.npz`` beside it, ``taskcodec export DECODER --onnx``):
  :class:`OnnxServerModel` range-decodes each record with the factorized model's tables (numpy
  and the compiled coder) and runs ``g_s`` and the classifier tail in onnxruntime. Nothing here
  imports torch, so a server installed with ``pip install --no-deps taskcodec`` plus the
  ``[serve]`` extra runs it (``tests/test_serve_onnx.py`` checks it with torch made unimportable).
* ``decoder-<id>.pt``: :class:`TorchServerModel`, the PyTorch decoder (torch imported on load).

Both refuse a corrupt record with :class:`~taskcodec.errors.BitstreamError`, before any large
array is made, as ``TaskCodecBase.decode_latents`` does.

Memory (``bench/serve_load.py`` measures it under load): loading an optimised onnxruntime session and
the coder's compiled kernels frees much of what it allocated (the default export's session peaked at
174 MB of RSS and kept 98 once trimmed), and glibc keeps freed pages resident.
:meth:`OnnxServerModel.warm_up` runs both once at load and then hands the free pages back
(:func:`release_free_memory`): a served default export idles at about 250 MB instead of 280 MB
(``bench/serve_load.py``, ``docs/serving.md``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import sys
from pathlib import Path
from typing import Protocol

import numpy as np

from taskcodec.bitstream import check_decodable, payloads_by_size
from taskcodec.errors import BitstreamError, CheckpointError
from taskcodec.io import DEFAULT_MAX_PIXELS
from taskcodec.onnx_files import open_onnx_export

#: the version of the ``.npz`` tables this reader understands (``taskcodec.onnx_export.ONNX_CLIENT_VERSION``)
SUPPORTED_TABLES_VERSION = 1


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None  # musl has none
    except OSError:
        return None


def release_free_memory() -> bool:
    """Return the C heap's free pages to the OS (glibc ``malloc_trim``); False where there is no glibc."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0) >= 0)


class ServerModel(Protocol):
    """A server as the HTTP endpoint sees it: the model id it accepts, its meta, and a batch decoder."""

    codec_id: str
    meta: dict  # "family", "class_names", "class_words", ...

    def decode(self, records: list[bytes]) -> np.ndarray:
        """float32 logits ``[len(records), classes]`` in the order given; BitstreamError on a corrupt record."""
        ...


class OnnxServerModel:
    """``server-<id>.onnx`` + ``.npz``: the compiled range decoder, then ``y_hat`` -> logits in onnxruntime."""

    def __init__(self, onnx_path: str | os.PathLike, threads: int | None = None) -> None:
        from taskcodec.range_coder import CdfTables

        remake = "taskcodec export DECODER --onnx"
        self.session, tables = open_onnx_export(onnx_path, "server", remake, "serve", SUPPORTED_TABLES_VERSION,
                                                int(threads or 0), spin=False, arena=False)  # the event loop shares these cores
        try:
            meta = json.loads(str(tables["meta"]))
        except (KeyError, ValueError) as e:
            raise CheckpointError(f"{Path(onnx_path).with_suffix('.npz')} has no readable server metadata ({e}); "
                                  f"re-export it with `{remake}`") from e  # fmt: skip
        self.codec_id = str(tables["codec_id"])
        self.meta = {"codec_id": self.codec_id, "family": str(tables["family"]), **meta}
        self.stride, self.analysis_stride = int(tables["stride"]), int(tables["analysis_stride"])
        self.channels = int(tables["latent_channels"])
        self.tables = CdfTables(tables["cdfs"], tables["cdf_lengths"], tables["offsets"])
        self.medians = tables["medians"].astype(np.float32).reshape(1, -1, 1, 1)

    def warm_up(self) -> None:
        """Run the compiled coder and the graph once at the export's input size, so the first request pays
        neither (loading the coder's kernels takes about a second), then return the free pages to the OS."""
        _, height, width = self.meta.get("preprocessing", {}).get("input_size", (3, 64, 64))
        try:
            y_hat = self.decode_latents([b"\0"], (int(height), int(width)))  # any payload exercises the kernels
        except BitstreamError:  # the kernels ran; the graph then runs on zeros of the latent's shape
            y_hat = np.zeros((1, *self.latent_shape(int(height), int(width))), np.float32)
        self.session.run(["logits"], {"y_hat": y_hat})
        release_free_memory()

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        s, a = self.stride, self.analysis_stride
        return self.channels, -(-height // s) * s // a, -(-width // s) * s // a

    def decode_latents(self, payloads: list[bytes], image_size: tuple[int, int]) -> np.ndarray:
        """``y_hat`` of same-size images, exactly as the PyTorch decoder rebuilds it."""
        from taskcodec.range_coder import BatchDecoder

        shape = self.latent_shape(*image_size)
        check_decodable(image_size, shape, DEFAULT_MAX_PIXELS)
        decoders = BatchDecoder(payloads)
        indexes = np.broadcast_to(np.arange(shape[0]).reshape(1, -1, 1, 1), (len(payloads), *shape))
        symbols = decoders.decode(indexes.reshape(len(payloads), -1), self.tables)
        for read, p in zip(decoders.bytes_read, payloads, strict=True):
            if read < len(p):
                raise BitstreamError(f"corrupt record: {len(p) - read} bytes after the coded data; "
                                     "garbage was appended or the record was made by another model")  # fmt: skip
        return symbols.reshape(len(payloads), *shape).astype(np.float32) + self.medians

    def decode(self, records: list[bytes]) -> np.ndarray:
        out: np.ndarray | None = None
        for size, (idx, payloads) in payloads_by_size(records).items():
            y_hat = self.decode_latents(payloads, size)
            (logits,) = self.session.run(["logits"], {"y_hat": y_hat})
            if out is None:
                out = np.empty((len(records), logits.shape[1]), np.float32)
            out[idx] = logits
        return out


class TorchServerModel:
    """``decoder-<id>.pt``: the PyTorch decoder (imports torch)."""

    def __init__(self, decoder_path: str | os.PathLike, threads: int | None = None) -> None:
        import torch

        from taskcodec.export import load_decoder

        if threads:
            torch.set_num_threads(threads)
        self.codec, self.meta = load_decoder(decoder_path)
        self.codec_id = self.meta["codec_id"]

    def decode(self, records: list[bytes]) -> np.ndarray:
        import torch

        from taskcodec.batching import decode_records

        with torch.no_grad():
            return decode_records(self.codec, records, max(1, len(records))).numpy()


def load_server_model(path: str | os.PathLike, threads: int | None = None) -> ServerModel:
    """``server-<id>.onnx`` runs in onnxruntime (no torch); anything else is read as a ``decoder-<id>.pt``."""
    if Path(path).suffix == ".onnx":
        return OnnxServerModel(path, threads)
    return TorchServerModel(path, threads)
