"""Rate-accuracy curve maths: Pareto frontier, interpolation, bytes at equal accuracy, BD-style savings.

A point is ``(bytes_per_image, top1)`` with bytes > 0 and top1 in [0, 1]. Rates are compared in
log(bytes), as in Bjøntegaard's BD-rate, because codec settings space bytes geometrically and a
"2x fewer bytes" saving should mean the same thing at 200 B and at 20 kB. Nothing here
extrapolates: outside the measured range the answer is None.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from taskcodec.errors import ConfigError

__all__ = [
    "accuracy_at_bytes",
    "bd_rate_log_ratio",
    "binomial_stderr",
    "bytes_at_accuracy",
    "paired_difference",
    "savings_ratio",
    "upper_hull",
]

Point = tuple[float, float]


def _validate(points: Sequence[Sequence[float]]) -> np.ndarray:
    array = np.asarray(points, dtype=float)
    if array.size == 0:
        raise ConfigError("No rate-accuracy points given; pass a non-empty list of (bytes_per_image, top1).")
    if array.ndim != 2 or array.shape[1] != 2:
        raise ConfigError(
            f"Points must be (bytes_per_image, top1) pairs, got an array of shape {array.shape}."
        )
    if not np.all(np.isfinite(array)):
        raise ConfigError("Rate-accuracy points contain NaN or infinity; drop the failed runs first.")
    if np.any(array[:, 0] <= 0):
        raise ConfigError(f"bytes_per_image must be > 0, got {array[array[:, 0] <= 0, 0].tolist()}.")
    top1 = array[:, 1]
    if np.any((top1 < 0) | (top1 > 1)):
        raise ConfigError(f"top1 must be a fraction in [0, 1] (not a percentage), got {top1.tolist()}.")
    return array


def _check_target(target_top1: float) -> float:
    if not (isinstance(target_top1, numbers.Real) and 0.0 <= target_top1 <= 1.0):
        raise ConfigError(f"target_top1 must be a fraction in [0, 1], got {target_top1!r}.")
    return float(target_top1)


def upper_hull(points: Sequence[Sequence[float]]) -> list[Point]:
    """The Pareto frontier: sorted by bytes, each point strictly more accurate than every cheaper one.

    A setting that costs at least as much as another and is no more accurate is dominated and dropped.
    This is the monotone frontier, not the convex hull: it keeps concave dents, since a user picks one
    setting per image rather than time-sharing two.
    """
    array = _validate(points)
    order = np.lexsort((-array[:, 1], array[:, 0]))  # bytes ascending, ties: best top1 first
    frontier: list[Point] = []
    for rate, top1 in array[order]:
        if not frontier or top1 > frontier[-1][1]:  # equal bytes: the best came first, the rest fail here
            frontier.append((float(rate), float(top1)))
    return frontier


def bytes_at_accuracy(
    points: Sequence[Sequence[float]], target_top1: float, strict: bool = False
) -> float | None:
    """Fewest bytes/image that reach `target_top1` on the frontier, interpolating top1 in log(bytes).

    If the cheapest frontier point already exceeds the target its bytes are returned (an upper
    bound: the curve is never extrapolated below the measured range), or None with ``strict``,
    for ratios that a bound would overstate. Returns None when no point reaches the target,
    rather than extrapolating above it.
    """
    target = _check_target(target_top1)
    frontier = upper_hull(points)
    if frontier[0][1] >= target:
        return None if strict and frontier[0][1] > target else frontier[0][0]
    for (b0, a0), (b1, a1) in pairwise(frontier):
        if a1 >= target:
            t = (target - a0) / (a1 - a0)
            return math.exp(math.log(b0) + t * (math.log(b1) - math.log(b0)))
    return None


def accuracy_at_bytes(points: Sequence[Sequence[float]], bytes_per_image: float) -> float | None:
    """Frontier top1 at a byte budget, interpolated linearly in log(bytes); None outside the measured range.

    Between the last frontier point and the most expensive measured point the frontier is flat
    (spending more buys nothing that was measured), so the last frontier top1 is returned.
    """
    array = _validate(points)
    if not (isinstance(bytes_per_image, numbers.Real) and bytes_per_image > 0):
        raise ConfigError(f"bytes_per_image must be a positive number, got {bytes_per_image!r}.")
    frontier = upper_hull(array)
    if bytes_per_image < frontier[0][0] or bytes_per_image > array[:, 0].max():
        return None
    rates = np.log([b for b, _ in frontier])
    top1 = np.array([a for _, a in frontier])
    return float(np.interp(math.log(bytes_per_image), rates, top1))


def savings_ratio(
    reference_points: Sequence[Sequence[float]],
    candidate_points: Sequence[Sequence[float]],
    target_top1: float,
) -> float | None:
    """How many times fewer bytes the candidate needs than the reference to reach `target_top1`.

    > 1 means the candidate is cheaper. None if either curve never reaches the target.
    """
    ref = bytes_at_accuracy(reference_points, target_top1)
    cand = bytes_at_accuracy(candidate_points, target_top1)
    if ref is None or cand is None:
        return None
    return ref / cand


def binomial_stderr(p: float, n: int) -> float:
    """Standard error of a top-1 accuracy `p` measured on `n` images: sqrt(p(1-p)/n)."""
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"p must be a fraction in [0, 1], got {p!r}.")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ConfigError(f"n must be a positive integer count of images, got {n!r}.")
    return math.sqrt(p * (1.0 - p) / n)


def bd_rate_log_ratio(
    reference_points: Sequence[Sequence[float]],
    candidate_points: Sequence[Sequence[float]],
) -> float | None:
    """Bjøntegaard-style average byte saving of the candidate over the reference, as a ratio.

    log(bytes) is taken as a piecewise-linear function of top1 along each frontier, and
    log(bytes_ref) - log(bytes_cand) is averaged over the top1 interval both frontiers cover
    (exactly: the difference is piecewise linear, so the trapezoid rule on the merged breakpoints
    is exact). Returns exp(mean): > 1 means the candidate needs that many times fewer bytes on
    average. Piecewise-linear rather than Bjøntegaard's cubic fit, so it never overshoots between
    points. None when the common top1 interval is empty or a single point.
    """
    ref, cand = upper_hull(reference_points), upper_hull(candidate_points)
    lo = max(ref[0][1], cand[0][1])
    hi = min(ref[-1][1], cand[-1][1])
    if hi <= lo:
        return None

    def log_bytes(frontier: list[Point], top1: np.ndarray) -> np.ndarray:
        return np.interp(top1, [a for _, a in frontier], np.log([b for b, _ in frontier]))

    grid = np.array(sorted({lo, hi, *(a for _, a in ref + cand if lo < a < hi)}))
    diff = log_bytes(ref, grid) - log_bytes(cand, grid)
    mean = float(np.sum((diff[1:] + diff[:-1]) / 2 * np.diff(grid)) / (hi - lo))
    return math.exp(mean)


def paired_difference(correct: Sequence[bool], reference_correct: Sequence[bool], n_boot: int = 2000, seed: int = 0) -> dict:
    """Top-1 difference of a codec from the reference on the *same* images, with its uncertainty.

    Two codecs scored on the same images disagree only on some of them, so the paired difference
    is far tighter than two independent top-1 errors. Returns the difference (codec - reference),
    its McNemar standard error ``sqrt(b + c - (b - c)^2 / n) / n`` (``b``: only the codec right,
    ``c``: only the reference right), a normal 95% interval from it, and a paired bootstrap 95%
    interval (images resampled with replacement, seeded).
    """
    a = np.asarray(correct, dtype=bool)
    r = np.asarray(reference_correct, dtype=bool)
    if a.shape != r.shape or a.ndim != 1 or a.size == 0:
        raise ConfigError(f"paired_difference needs two equal, non-empty per-image vectors; got {a.shape} and {r.shape}")
    n = a.size
    b, c = int(np.sum(a & ~r)), int(np.sum(~a & r))
    diff = (b - c) / n
    se = math.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n
    d = a.astype(np.int8) - r.astype(np.int8)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boot = d[idx].mean(axis=1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return {
        "diff": diff, "se": se, "ci95": [diff - 1.96 * se, diff + 1.96 * se],
        "bootstrap_ci95": [float(lo), float(hi)], "only_codec_right": b, "only_reference_right": c, "n": n,
    }  # fmt: skip
