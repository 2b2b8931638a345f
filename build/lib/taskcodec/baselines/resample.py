"""Resampling: box-filter downsampling alone (raw pixels) or before JPEG."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from taskcodec.baselines.base import (
    Codec,
    Encoded,
    _as_rgb_image,
    _check_choice,
    _check_int,
    register_baseline,
)
from taskcodec.baselines.jpeg import JPEG

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


class _Resampled(Codec):
    """Shared downsample (box filter) / upsample (chosen interpolation) plumbing."""

    def __init__(self, factor: int, interpolation: str) -> None:
        self.factor = _check_int("Downsample factor", factor, 1)
        self.interpolation = _check_choice("Downsample interpolation", interpolation, INTERPOLATIONS)

    def _down(self, im: Image.Image) -> Image.Image:
        return im if self.factor == 1 else im.reduce(self.factor)

    def _up(self, small: Image.Image, size: tuple[int, int]) -> np.ndarray:
        if small.size != size:
            small = small.resize(size, resample=INTERPOLATIONS[self.interpolation])
        return np.asarray(small)


class Downsample(_Resampled):
    """Send fewer pixels, uncompressed: the file is the raw ceil(h/f) x ceil(w/f) x 3 bytes."""

    name = "downsample"

    def __init__(self, factor: int, interpolation: str = "bicubic") -> None:
        super().__init__(factor, interpolation)
        self.setting = f"f={self.factor},{self.interpolation}"

    def encode(self, image: np.ndarray | Image.Image) -> Encoded:
        im = _as_rgb_image(image)
        data = self._down(im).tobytes()
        h, w = math.ceil(im.height / self.factor), math.ceil(im.width / self.factor)
        small = Image.frombytes("RGB", (w, h), data)  # decode from the bytes, as a receiver would
        return Encoded(data, self._up(small, im.size), len(data))


class DownsampleJPEG(_Resampled):
    """Downsample, JPEG-encode the small image, decode it, upsample back."""

    name = "downsample_jpeg"

    def __init__(self, factor: int, quality: int, interpolation: str = "bicubic") -> None:
        super().__init__(factor, interpolation)
        self.jpeg = JPEG(quality)
        self.setting = f"f={self.factor},q={self.jpeg.quality},{self.interpolation}"

    def encode(self, image: np.ndarray | Image.Image) -> Encoded:
        im = _as_rgb_image(image)
        small = self.jpeg.encode(self._down(im))
        return Encoded(small.data, self._up(Image.fromarray(small.decoded), im.size), small.payload_bytes)


register_baseline("downsample", Downsample, "factor", [2, 4, 8])
register_baseline("downsample_jpeg", DownsampleJPEG, None, [{"factor": 2, "quality": q} for q in (10, 30, 50, 75, 90)])
