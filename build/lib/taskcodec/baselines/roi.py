"""Region-of-interest JPEG: keep the salient part of an image, flatten or blur the rest, send one plain JPEG.

The encoder ranks ``block x block`` cells (16 = one 4:2:0 MCU, so no MCU straddles the mask
edge) by their mean saliency and keeps the top cells until they cover ``fraction`` of the image;
every other pixel becomes the background's mean colour (``flat``) or a Gaussian blur of the image
(``blur``). The result is encoded by :class:`~taskcodec.baselines.JPEG` at ``quality``. The mask
is not sent: a receiver decodes an ordinary JPEG, so the bytes are ``len(file)`` and nothing else.

Saliency sources (what the *encoder* must run):

* ``gradient``: |d logit_top / d x| of the classifier, summed over channels and smoothed. It needs
  the classifier on the client (``checkpoint``: a reference ``.ckpt``) and a backward pass.
* ``variance``: local variance of luma in a 7x7 window, smoothed. No model.
* ``bitmap``: the learned codec's own bits per pixel (:func:`taskcodec.analysis.bits.learned_bit_maps`;
  ``checkpoint``: an ``encoder-<id>.pt``); only as fine as the codec's latent grid.
* ``center``: a fixed Gaussian bump at the centre. A control: the prior that objects sit in the middle.
"""

from __future__ import annotations

import numbers
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from taskcodec.baselines.base import Codec, Encoded, _as_rgb_image, register_baseline
from taskcodec.baselines.jpeg import JPEG
from taskcodec.errors import ConfigError

SOURCES = ("gradient", "variance", "bitmap", "center")
BACKGROUNDS = ("flat", "blur")
_NEEDS_CHECKPOINT = {"gradient": "a reference classifier .ckpt", "bitmap": "an encoder-<id>.pt"}


def _gaussian_smooth(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with edge replication."""
    if sigma <= 0:
        return a
    r = max(1, int(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    p = np.pad(a, r, mode="edge")
    p = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 0, p)
    return np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 1, p)


def _box_mean(a: np.ndarray, r: int) -> np.ndarray:
    p = np.pad(a, ((r + 1, r), (r + 1, r)), mode="edge").cumsum(0).cumsum(1)
    n = 2 * r + 1
    return (p[n:, n:] - p[:-n, n:] - p[n:, :-n] + p[:-n, :-n]) / (n * n)


def local_variance(image: np.ndarray, radius: int = 3) -> np.ndarray:
    """Variance of luma in a (2r+1)^2 window around each pixel."""
    y = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.maximum(_box_mean(y * y, radius) - _box_mean(y, radius) ** 2, 0.0)


@lru_cache(maxsize=4)
def _classifier(path: str):
    from taskcodec.models import load_image_classifier

    model = load_image_classifier(path)
    return model.requires_grad_(False)  # only the input's gradient is needed


@lru_cache(maxsize=4)
def _encoder(path: str):
    from taskcodec.export import load_encoder

    return load_encoder(path)[0]


def gradient_saliency(classifier, image: np.ndarray) -> np.ndarray:
    """|d logit_top / d x| summed over RGB: which pixels move the classifier's top class."""
    import torch

    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float().div(255).requires_grad_(True)
    logits = classifier(x)
    logits[0, logits[0].argmax()].backward()
    return x.grad[0].abs().sum(0).numpy().astype(np.float64)


def _check_real(name: str, value, lo: float, hi: float | None, lo_open: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        v = float(value)
        ok = (v > lo if lo_open else v >= lo) and (hi is None or v <= hi)
    if not ok:
        rng = f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'}]"
        raise ConfigError(f"ROI JPEG {name} must be a number in {rng}, got {value!r}.")
    return float(value)


class ROIJPEG(Codec):
    """Salient cells kept, the rest flattened or blurred, then one JPEG (see the module docstring)."""

    name = "roi_jpeg"

    def __init__(
        self,
        source: str = "variance",
        fraction: float = 0.5,
        quality: int = 30,
        background: str = "flat",
        blur: float = 4.0,
        block: int = 16,
        smooth: float = 2.0,
        checkpoint: str | None = None,
    ) -> None:
        if source not in SOURCES:
            raise ConfigError(f"ROI JPEG source must be one of {list(SOURCES)}, got {source!r}.")
        if background not in BACKGROUNDS:
            raise ConfigError(f"ROI JPEG background must be one of {list(BACKGROUNDS)}, got {background!r}.")
        self.fraction = _check_real("fraction", fraction, 0.0, 1.0, lo_open=True)
        self.blur = _check_real("blur", blur, 0.0, None, lo_open=True)
        self.smooth = _check_real("smooth", smooth, 0.0, None)
        if not isinstance(block, numbers.Integral) or isinstance(block, bool) or not 1 <= block <= 256:
            raise ConfigError(f"ROI JPEG block must be an integer in 1..256, got {block!r}.")
        self.block = int(block)
        if source in _NEEDS_CHECKPOINT:
            if not checkpoint:
                raise ConfigError(f"ROI JPEG source {source!r} needs checkpoint= {_NEEDS_CHECKPOINT[source]}.")
            if not Path(checkpoint).is_file():
                raise ConfigError(f"ROI JPEG checkpoint {checkpoint!r} does not exist.")
        elif checkpoint:
            raise ConfigError(f"ROI JPEG source {source!r} uses no model; drop checkpoint={checkpoint!r}.")
        self.source, self.background, self.checkpoint = source, background, checkpoint
        self.jpeg = JPEG(quality)
        bg = "flat" if background == "flat" else f"blur{self.blur:g}"
        model = f":{Path(checkpoint).stem}" if checkpoint else ""
        self.setting = f"src={source}{model},p={self.fraction:g},q={self.jpeg.quality},bg={bg}"
        if self.block != 16:
            self.setting += f",block={self.block}"

    def saliency(self, image: np.ndarray) -> np.ndarray:
        """Float [H, W]: higher means keep (uint8 RGB [H, W, 3] in)."""
        h, w = image.shape[:2]
        if self.source == "variance":
            return _gaussian_smooth(local_variance(image), self.smooth)
        if self.source == "gradient":
            return _gaussian_smooth(gradient_saliency(_classifier(self.checkpoint), image), self.smooth)
        if self.source == "bitmap":
            import torch

            from taskcodec.analysis.bits import learned_bit_maps

            x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float().div(255)
            return learned_bit_maps(_encoder(self.checkpoint), x)[0].bits
        yy, xx = np.mgrid[0:h, 0:w]
        s = 0.25 * min(h, w)
        return np.exp(-(((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2) / (2 * s * s)))

    def mask(self, image: np.ndarray) -> np.ndarray:
        """Bool [H, W]: the top cells by mean saliency until they cover ``fraction`` of the pixels."""
        sal = self.saliency(image)
        h, w = sal.shape
        b = self.block
        cells = []
        for y0 in range(0, h, b):
            for x0 in range(0, w, b):
                part = sal[y0 : y0 + b, x0 : x0 + b]
                cells.append((-float(part.mean()), y0, x0, part.size))
        keep = np.zeros((h, w), dtype=bool)
        covered, target = 0, self.fraction * h * w
        for _, y0, x0, size in sorted(cells):  # ties go to the earlier (top-left) cell: deterministic
            if covered >= target - 1e-9:
                break
            keep[y0 : y0 + b, x0 : x0 + b] = True
            covered += size
        return keep

    def encode(self, image: np.ndarray | Image.Image) -> Encoded:
        im = _as_rgb_image(image)
        arr = np.asarray(im)
        keep = self.mask(arr)
        if self.background == "flat":
            rest = arr[~keep]
            fill = np.round(rest.mean(0)).astype(np.uint8) if len(rest) else np.zeros(3, np.uint8)
            bg = np.broadcast_to(fill, arr.shape)
        else:
            bg = np.asarray(im.filter(ImageFilter.GaussianBlur(self.blur)))
        return self.jpeg.encode(np.where(keep[..., None], arr, bg).astype(np.uint8))


# make_codec("roi_jpeg", {...}) and evaluate.py's baselines
register_baseline(ROIJPEG.name, ROIJPEG, None, [{"source": "variance", "fraction": p, "quality": 30} for p in (0.25, 0.5)])
