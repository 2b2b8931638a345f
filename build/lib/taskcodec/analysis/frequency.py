"""Which 8x8 DCT frequencies a classifier needs, and JPEG quantisation tables derived from that.

The study (JPEG XL's Butteraugli asks the same of the human eye): convert an image to JPEG's
full-range BT.601 YCbCr, take the orthonormal 8x8 DCT of every block of one channel, add
``±delta`` (a seeded random sign per block) to one coefficient (i, j) in every block, invert,
convert back to RGB, clip to 0..255 and classify. Because the DCT is orthonormal, a coefficient
change of ``delta`` puts the same energy into the block whatever (i, j) is: an RMS change of
``delta / 8`` per pixel of that channel. So the maps compare frequencies at equal perturbation
energy, which is what a quantiser's error also is (a uniform step ``Q`` gives RMS ``Q / sqrt(12)``).
One sign pattern is shared by all 192 perturbations (common random numbers), so differences
between coefficients are not sign noise. Images are not rounded to uint8 after clipping.

Per perturbation the maps hold the top-1 drop (unperturbed minus perturbed), the fraction of
images whose predicted class changes, the mean L1 change of the predicted probabilities
(``sum_k |p_k - p0_k|``) and the mean ``KL(p0 || p)``.

`derive_qtables` turns a map into a luma table (from Y) and a chroma table (from the mean of Cb
and Cr): step ``∝ sensitivity^-gamma``, rescaled to the geometric mean of libjpeg's standard table
of the same kind, so only the shape changes and ``libjpeg_scaled`` quality q means about the same
overall level as plain JPEG at q.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from taskcodec.errors import ConfigError

__all__ = [
    "CHANNELS",
    "STANDARD_CHROMA",
    "STANDARD_LUMA",
    "block_dct",
    "block_idct",
    "dct_matrix",
    "derive_qtables",
    "frequency_sensitivity",
    "perturb_coefficient",
    "plot_maps",
    "random_signs",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
]

CHANNELS = ("Y", "Cb", "Cr")
METRICS = ("top1_drop", "flip_rate", "mean_l1", "mean_kl")
# libjpeg's Annex K tables (quality 50), natural (row-major) order
STANDARD_LUMA = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
]  # fmt: skip
STANDARD_CHROMA = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, *[99] * 32,
]  # fmt: skip
_TO_YCC = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_OFFSET = torch.tensor([0.0, 128.0, 128.0]).view(1, 3, 1, 1)


def rgb_to_ycbcr(x: Tensor) -> Tensor:
    """[N, 3, H, W] RGB in 0..255 -> JPEG (JFIF) full-range BT.601 YCbCr in 0..255."""
    return torch.einsum("cd,ndhw->nchw", _TO_YCC.to(x), x) + _OFFSET.to(x)


def ycbcr_to_rgb(x: Tensor) -> Tensor:
    """The exact inverse of `rgb_to_ycbcr` (no clipping)."""
    return torch.einsum("cd,ndhw->nchw", torch.linalg.inv(_TO_YCC.double()).to(x), x - _OFFSET.to(x))


def dct_matrix(n: int = 8) -> Tensor:
    """Orthonormal DCT-II matrix ``C`` (rows are basis vectors): a block's coefficients are ``C X C^T``."""
    k, i = torch.meshgrid(
        torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij"
    )
    c = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    c[0] /= math.sqrt(2)
    return c


def _blocks(x: Tensor) -> Tensor:
    """[N, C, 8a, 8b] -> [N, C, a, b, 8, 8]."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 8, 8, w // 8, 8).permute(0, 1, 2, 4, 3, 5)


def _unblocks(b: Tensor) -> Tensor:
    n, c, a, bb = b.shape[:4]
    return b.permute(0, 1, 2, 4, 3, 5).reshape(n, c, a * 8, bb * 8)


def block_dct(x: Tensor) -> Tensor:
    """Orthonormal 8x8 DCT of every block: [N, C, H, W] (H, W multiples of 8) -> [N, C, H/8, W/8, 8, 8]."""
    c = dct_matrix().to(x)
    return c @ _blocks(x) @ c.T


def block_idct(coeffs: Tensor) -> Tensor:
    """Inverse of `block_dct`."""
    c = dct_matrix().to(coeffs)
    return _unblocks(c.T @ coeffs @ c)


def perturb_coefficient(ycc: Tensor, channel: int, i: int, j: int, delta: float, signs: Tensor) -> Tensor:
    """YCbCr with ``delta * signs[n, a, b]`` added to DCT coefficient (i, j) of ``channel`` in every block.

    ``ycc`` is [N, 3, H, W]; sizes that are not multiples of 8 are padded by edge replication (as
    JPEG encoders do), perturbed, and cropped back.
    """
    n, _, h, w = ycc.shape
    ph, pw = (-h) % 8, (-w) % 8
    x = torch.nn.functional.pad(ycc, (0, pw, 0, ph), mode="replicate") if ph or pw else ycc
    coeffs = block_dct(x[:, channel : channel + 1])
    coeffs[:, 0, :, :, i, j] += delta * signs.to(coeffs)
    out = x.clone()
    out[:, channel : channel + 1] = block_idct(coeffs)
    return out[:, :, :h, :w]


def random_signs(n: int, h: int, w: int, seed: int) -> Tensor:
    """±1 per image and 8x8 block (blocks of the padded size), from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, math.ceil(h / 8), math.ceil(w / 8))
    return torch.randint(0, 2, shape, generator=g, dtype=torch.float64).mul_(2).sub_(1)


@torch.no_grad()
def frequency_sensitivity(
    logits_fn: Callable[[Tensor], Tensor],
    images: np.ndarray,
    labels: np.ndarray,
    delta: float = 64.0,
    seed: int = 0,
    batch_size: int = 250,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Maps [3, 8, 8] of each metric in `METRICS` for ``logits_fn`` (RGB in [0, 1] -> logits).

    ``images`` are uint8 [N, H, W, 3]. Returns the maps as nested lists plus the unperturbed top-1
    and the settings, so the result is JSON as is.
    """
    if not np.issubdtype(images.dtype, np.uint8) or images.ndim != 4 or images.shape[-1] != 3:
        raise ConfigError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    rgb = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).double()
    ycc = rgb_to_ycbcr(rgb)
    signs = random_signs(len(images), images.shape[1], images.shape[2], seed)

    def run(transform: Callable[[Tensor, slice], Tensor]) -> Tensor:
        out = []
        for s in range(0, len(images), batch_size):
            x = ycbcr_to_rgb(transform(ycc[s : s + batch_size], slice(s, s + batch_size)))
            out.append(logits_fn(x.clamp(0, 255).div(255).float()).double())
        return torch.cat(out)

    logits0 = run(lambda x, _: x)
    p0, logp0 = logits0.softmax(1), logits0.log_softmax(1)
    pred0 = logits0.argmax(1)
    top1_0 = (pred0 == y).double().mean().item()
    maps = {m: np.zeros((3, 8, 8)) for m in METRICS}
    for c in range(3):
        for i in range(8):
            for j in range(8):
                logits = run(lambda x, idx: perturb_coefficient(x, c, i, j, delta, signs[idx]))  # noqa: B023
                pred = logits.argmax(1)
                maps["top1_drop"][c, i, j] = top1_0 - (pred == y).double().mean().item()
                maps["flip_rate"][c, i, j] = (pred != pred0).double().mean().item()
                maps["mean_l1"][c, i, j] = (logits.softmax(1) - p0).abs().sum(1).mean().item()
                maps["mean_kl"][c, i, j] = (p0 * (logp0 - logits.log_softmax(1))).sum(1).mean().item()
            if progress:
                progress(f"{CHANNELS[c]} row {i} done")
    return {
        "delta": delta, "seed": seed, "n_images": len(images), "top1_unperturbed": top1_0,
        "channels": list(CHANNELS), "layout": "maps[metric][channel][i][j]: i = vertical, j = horizontal frequency",
        "maps": {m: v.tolist() for m, v in maps.items()},
    }  # fmt: skip


def derive_qtables(
    result: dict, metric: str = "mean_l1", gamma: float = 1.0, floor_frac: float = 0.01
) -> dict:
    """Base (quality-50-like) luma and chroma tables, natural order, from a sensitivity result.

    Step (i, j) ∝ ``max(s, floor_frac * max(s))^-gamma``: coarse where the classifier is
    insensitive. The floor keeps a coefficient the classifier ignores (or a noisy, non-positive
    top-1 drop) from getting an infinite step. Each table is then rescaled to the geometric mean
    of the standard libjpeg table of its kind and rounded into 1..255.
    """
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {METRICS}, got {metric!r}")
    if not gamma > 0:
        raise ConfigError(f"gamma must be positive, got {gamma!r}")
    m = np.asarray(result["maps"][metric], dtype=np.float64)
    out = {"metric": metric, "gamma": gamma, "floor_frac": floor_frac, "delta": result.get("delta")}
    for key, s, std in (("luma", m[0], STANDARD_LUMA), ("chroma", m[1:].mean(0), STANDARD_CHROMA)):
        s = np.maximum(s, floor_frac * max(s.max(), 1e-12))
        raw = s**-gamma
        raw *= math.exp(np.log(std).mean() - np.log(raw).mean())
        out[key] = np.clip(np.rint(raw), 1, 255).astype(int).ravel().tolist()
    return out


def plot_maps(result: dict, metric: str, path: str, title: str = "") -> str:
    """Three 8x8 heat maps (Y, Cb, Cr) of one metric on a shared colour scale, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(result["maps"][metric])
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    vmin, vmax = min(m.min(), 0.0), m.max()
    for c, ax in enumerate(axes):
        im = ax.imshow(m[c], cmap="viridis", vmin=vmin, vmax=vmax)
        ax.set_title(CHANNELS[c])
        ax.set_xlabel("horizontal frequency j")
    axes[0].set_ylabel("vertical frequency i")
    fig.colorbar(im, ax=axes, shrink=0.8, label=metric)
    fig.suptitle(title or f"{metric}, delta={result['delta']}, n={result['n_images']}")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
