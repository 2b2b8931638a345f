"""What a client costs: multiply-accumulates, parameters, and encode throughput against JPEG.

MACs are counted by one function, :func:`macs`, with PyTorch's own ``torch.utils.flop_counter``
(no extra dependency, and it sees every convolution and matrix product that actually runs,
GDN's 1x1 convolutions included, whatever the module structure). It counts convolutions and
matrix products only; element-wise work (activations, normalisation, rounding) is left out, as
fvcore and thop also do. A MAC is half of the counter's FLOPs.

Throughput is measured on the same decoded RGB images for both sides of a ratio, in one process,
on the current torch thread count, because absolute times on a shared machine are noise.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from taskcodec.io import to_tensor


def macs(fn: Callable[..., Any], *args: Any) -> int:
    """Multiply-accumulates of one call of ``fn(*args)`` (convolutions and matrix products)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args)
    return int(counter.get_total_flops()) // 2


def client_macs(codec: nn.Module, image_size: tuple[int, int]) -> int:
    """MACs per image of everything the client runs: the analysis and the entropy model's networks.

    ``image_size`` has no default: a share is only right with both sides counted at the size the model reads.
    """
    x = torch.rand(1, 3, *image_size)
    was_training = codec.training
    codec.eval()
    try:
        return macs(lambda t: codec.entropy(codec.analysis(codec._pad(t))), x)
    finally:
        codec.train(was_training)


def classifier_macs(classifier: nn.Module, image_size: tuple[int, int]) -> int:
    """MACs per image of a classifier (the reference) on one image."""
    was_training = classifier.training
    classifier.eval()
    try:
        return macs(classifier, torch.rand(1, 3, *image_size))
    finally:
        classifier.train(was_training)


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def median_seconds(fn: Callable[[], Any], repeats: int = 3) -> float:
    """Median wall time of ``repeats`` calls (after one warm-up call, which also compiles the coder)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def jpeg_files(images: Sequence[np.ndarray], quality: int = 30) -> list[bytes]:
    """Pillow JPEG files (``optimize=True``, 4:2:0) of uint8 H x W x 3 images: the baseline encoder."""
    out = []
    for a in images:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=quality, optimize=True)
        out.append(buf.getvalue())
    return out


def images_per_second(encode: Callable[[Tensor], Any], images: np.ndarray, batch: int = 256, repeats: int = 3) -> float:
    """Throughput of ``encode`` (float RGB batch -> whatever it sends) from uint8 images, conversion included."""
    def run() -> None:
        for i in range(0, len(images), batch):
            encode(to_tensor(images[i : i + batch]))

    return len(images) / median_seconds(run, repeats)


def jpeg_images_per_second(images: np.ndarray, quality: int = 30, repeats: int = 3) -> float:
    """Pillow JPEG encode throughput (``optimize=True``) of the same uint8 images: the baseline."""
    return len(images) / median_seconds(lambda: jpeg_files(images, quality), repeats)


def encode_throughput(
    encoder: nn.Module, images: np.ndarray, batch: int = 256, jpeg_quality: int = 30, repeats: int = 3
) -> dict[str, float]:
    """Client encode (uint8 RGB -> record bytes) against Pillow JPEG on the same images, in images/s.

    The codec's time includes the conversion to float, the network, quantisation and range coding:
    everything between decoded RGB and the bytes sent.
    """
    codec = images_per_second(encoder.encode, images, batch, repeats)
    jpeg = jpeg_images_per_second(images, jpeg_quality, repeats)
    return {
        "images": len(images),
        "client_encode_images_per_s": codec,
        "jpeg_encode_images_per_s": jpeg,
        "client_encode_vs_jpeg": codec / jpeg,
        "torch_threads": torch.get_num_threads(),
    }


class single_thread:  # noqa: N801  (used as a context manager, like torch.no_grad)
    """Run a block on one torch thread (what speed columns and benches are measured on), then restore."""

    def __enter__(self) -> None:
        self._threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self._threads)
