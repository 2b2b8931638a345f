"""Rate-accuracy curve maths: frontier, log-rate interpolation, savings at equal accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from taskcodec.curves import (
    accuracy_at_bytes,
    bd_rate_log_ratio,
    binomial_stderr,
    bytes_at_accuracy,
    savings_ratio,
    upper_hull,
)
from taskcodec.errors import ConfigError

CURVE = [(100.0, 0.5), (1000.0, 0.7), (10000.0, 0.8)]


def test_hull_drops_dominated_points_and_sorts():
    points = [(1000, 0.7), (100, 0.5), (500, 0.45), (2000, 0.7), (10000, 0.8), (100, 0.4), (5000, 0.75)]
    assert upper_hull(points) == [(100, 0.5), (1000, 0.7), (5000, 0.75), (10000, 0.8)]


def test_hull_accepts_numpy_and_returns_floats():
    hull = upper_hull(np.array([[10, 0.1], [20, 0.2]]))
    assert hull == [(10.0, 0.1), (20.0, 0.2)] and all(isinstance(v, float) for p in hull for v in p)


def test_bytes_at_accuracy_interpolates_in_log_bytes():
    # halfway in top1 between 100 B and 1000 B is the geometric mean, sqrt(1e5) ~ 316.2 (linear would be 550)
    assert bytes_at_accuracy(CURVE, 0.6) == pytest.approx(math.sqrt(1e5))
    assert bytes_at_accuracy(CURVE, 0.75) == pytest.approx(10**3.5)
    assert bytes_at_accuracy(CURVE, 0.7) == pytest.approx(1000.0)


def test_bytes_at_accuracy_ignores_dominated_points():
    assert bytes_at_accuracy(CURVE + [(200.0, 0.3), (20000.0, 0.6)], 0.6) == pytest.approx(math.sqrt(1e5))


def test_bytes_at_accuracy_edges():
    assert (
        bytes_at_accuracy(CURVE, 0.3) == 100.0
    )  # already reached by the cheapest point: never extrapolate down
    assert bytes_at_accuracy(CURVE, 0.5) == 100.0
    assert bytes_at_accuracy(CURVE, 0.81) is None  # never reached: never extrapolate up
    assert bytes_at_accuracy([(50.0, 0.9)], 0.9) == 50.0


def test_bytes_at_accuracy_strict_gives_no_bound_below_range():
    assert bytes_at_accuracy(CURVE, 0.3, strict=True) is None
    assert bytes_at_accuracy(CURVE, 0.5, strict=True) == 100.0  # the cheapest point itself is measured
    assert bytes_at_accuracy(CURVE, 0.6, strict=True) == pytest.approx(math.sqrt(1e5))
    assert bytes_at_accuracy(CURVE, 0.81, strict=True) is None


def test_accuracy_at_bytes():
    assert accuracy_at_bytes(CURVE, math.sqrt(1e5)) == pytest.approx(0.6)
    assert accuracy_at_bytes(CURVE, 100.0) == pytest.approx(0.5)
    assert accuracy_at_bytes(CURVE, 99.0) is None
    assert accuracy_at_bytes(CURVE, 10001.0) is None
    # beyond the last frontier point but within the measured range the frontier is flat
    assert accuracy_at_bytes(CURVE + [(20000.0, 0.6)], 15000.0) == pytest.approx(0.8)


def test_savings_ratio_of_a_curve_ten_times_cheaper():
    candidate = [(b / 10, a) for b, a in CURVE]
    for target in (0.55, 0.7, 0.77):
        assert savings_ratio(CURVE, candidate, target) == pytest.approx(10.0)
    assert savings_ratio(candidate, CURVE, 0.6) == pytest.approx(0.1)
    assert savings_ratio(CURVE, [(10.0, 0.6)], 0.7) is None
    assert savings_ratio([(10.0, 0.6)], CURVE, 0.7) is None


def test_bd_rate_log_ratio():
    candidate = [(b / 10, a) for b, a in CURVE]
    assert bd_rate_log_ratio(CURVE, candidate) == pytest.approx(10.0)
    assert bd_rate_log_ratio(CURVE, CURVE) == pytest.approx(1.0)
    # saving 10x at top1 0.5 falling linearly to 1x at 0.7: mean log ratio is log(10)/2
    assert bd_rate_log_ratio([(100, 0.5), (1000, 0.7)], [(10, 0.5), (1000, 0.7)]) == pytest.approx(
        math.sqrt(10)
    )
    # only the common interval [0.5, 0.7] counts; the reference's extra point above 0.7 is ignored
    assert bd_rate_log_ratio(CURVE, [(10, 0.5), (1000, 0.7)]) == pytest.approx(math.sqrt(10))
    assert bd_rate_log_ratio(CURVE, [(10, 0.1), (20, 0.2)]) is None
    assert bd_rate_log_ratio(CURVE, [(10, 0.6)]) is None


def test_binomial_stderr():
    assert binomial_stderr(0.5, 100) == pytest.approx(0.05)
    assert binomial_stderr(0.9, 10000) == pytest.approx(math.sqrt(0.9 * 0.1 / 10000))
    assert binomial_stderr(1.0, 5) == 0.0
    for p, n in ((1.5, 10), (-0.1, 10), (0.5, 0), (0.5, 2.5)):
        with pytest.raises(ConfigError):
            binomial_stderr(p, n)


@pytest.mark.parametrize(
    "points",
    [
        [],
        [(0.0, 0.5)],
        [(-5.0, 0.5)],
        [(100.0, 1.5)],
        [(100.0, -0.1)],
        [(100.0, 50.0)],
        [(float("nan"), 0.5)],
        [(1.0, 2.0, 3.0)],
    ],
)
def test_bad_points_raise_config_error(points):
    with pytest.raises(ConfigError):
        upper_hull(points)
    with pytest.raises(ConfigError):
        bytes_at_accuracy(points, 0.5)


def test_bad_targets_raise_config_error():
    with pytest.raises(ConfigError):
        bytes_at_accuracy(CURVE, 70)
    with pytest.raises(ConfigError):
        accuracy_at_bytes(CURVE, 0)


def test_paired_difference_mcnemar_and_bootstrap():
    from taskcodec.curves import paired_difference

    ref = [True] * 60 + [False] * 40
    same = paired_difference(ref, ref)
    assert same["diff"] == 0 and same["se"] == 0 and same["bootstrap_ci95"] == [0.0, 0.0]
    # the codec loses 6 images the reference got and wins 2 it missed: -4 points
    codec = [False] * 6 + [True] * 54 + [True] * 2 + [False] * 38
    d = paired_difference(codec, ref)
    assert d["diff"] == pytest.approx(-0.04) and (d["only_codec_right"], d["only_reference_right"]) == (2, 6)
    assert d["se"] == pytest.approx(math.sqrt(8 - 16 / 100) / 100)
    lo, hi = d["bootstrap_ci95"]
    assert lo < -0.04 < hi and hi - lo < 0.12  # far tighter than two unpaired ±2*sqrt(p(1-p)/n)
    with pytest.raises(ConfigError):
        paired_difference([True], [True, False])
