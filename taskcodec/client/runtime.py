"""An exported ONNX client (``taskcodec export --onnx``): images in, records and containers out, no torch."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from taskcodec.bitstream import pack_record
from taskcodec.container import Entry, write_container
from taskcodec.errors import DataError
from taskcodec.io import encode_by_size, read_rgb
from taskcodec.onnx_files import open_onnx_export
from taskcodec.preprocessing import check_native_size, padded_latent_shape
from taskcodec.range_coder import BatchEncoder, CdfTables

SUPPORTED_VERSION = 1


class OnnxClient:
    """``client-<id>.onnx`` + ``client-<id>.npz``: the analysis in onnxruntime, quantisation in numpy, the range coder."""

    def __init__(self, onnx_path: str | os.PathLike, threads: int = 1, native_size: bool = False) -> None:
        self.session, tables = open_onnx_export(onnx_path, "client", "taskcodec export CKPT --onnx", "client",
                                                SUPPORTED_VERSION, max(1, int(threads)))  # fmt: skip
        self.codec_id = str(tables["codec_id"])
        self.stride = int(tables["stride"])
        self.analysis_stride = int(tables["analysis_stride"])
        self.tables = CdfTables(tables["cdfs"], tables["cdf_lengths"], tables["offsets"])
        self.medians = tables["medians"].astype(np.float32).reshape(1, -1, 1, 1)
        self.latent_channels = self.medians.shape[1]
        pre = json.loads(str(tables["preprocessing"]))
        self.input_size = None if native_size or not pre else (int(pre["input_size"][1]), int(pre["input_size"][2]))
        self.crop_pct = float((pre or {}).get("crop_pct", 1.0))  # timm's evaluation crop (1.0: the shorter side fits)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(channels, height, width) of an image's latent, as ``TaskCodecBase.latent_shape`` computes it."""
        return padded_latent_shape(self.latent_channels, self.stride, self.analysis_stride, height, width)

    def encode(self, images: np.ndarray) -> list[bytes]:
        """Records of same-size uint8 images ``[B, H, W, 3]``, as ``TaskCodecBase.encode`` writes them."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3 or not len(images):
            raise DataError(f"expected uint8 images [B, H, W, 3] with B >= 1, got {images.dtype} {list(images.shape)}")
        b, h, w, _ = images.shape
        x = images.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
        ph, pw = (-h) % self.stride, (-w) % self.stride
        if ph or pw:  # replicate padding, as the PyTorch codec pads
            x = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="edge")
        (y,) = self.session.run(["y"], {"x": np.ascontiguousarray(x)})
        symbols = np.rint(y - self.medians).astype(np.int64)  # round half to even, as torch.round
        indexes = np.broadcast_to(np.arange(y.shape[1]).reshape(1, -1, 1, 1), y.shape)
        encoder = BatchEncoder(b)
        encoder.encode(symbols.reshape(b, -1), indexes.reshape(b, -1), self.tables)
        return [pack_record(h, w, p) for p in encoder.flush()]

    def compress(self, images: Sequence[str | os.PathLike | bytes], names: Sequence[str] | None = None) -> bytes:
        """One container (the format of ``taskcodec compress --archive``) of image files or encoded bytes."""
        if not images:
            raise DataError("no images to compress")
        arrays = [read_rgb(bytes(im) if isinstance(im, (bytes, bytearray)) else im,
                           f"image {k}" if isinstance(im, (bytes, bytearray)) else str(im), size=self.input_size,
                           crop_pct=self.crop_pct)
                  for k, im in enumerate(images)]  # fmt: skip
        for k, a in enumerate(arrays):
            check_native_size(self, a.shape[0], a.shape[1], f"image {k}")
        records = encode_by_size(arrays, self.encode)
        entries = [Entry(r, name=None if names is None else names[k]) for k, r in enumerate(records)]
        return write_container(entries, self.codec_id)


def load_onnx_client(path: str | os.PathLike, threads: int = 1, native_size: bool = False) -> OnnxClient:
    """The client of ``client-<id>.onnx`` (its ``.npz`` tables beside it)."""
    return OnnxClient(path, threads, native_size)
