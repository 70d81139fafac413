"""Small-sample summaries for the deciding study: t intervals and exact paired tests.

The study (:mod:`jaxwm.runner.study`) has a handful of (seed, key) units per cell, so every
figure it reports is a mean with a Student-t 95% interval and its ``n``, and every comparison of
partitioned against baseline is *paired* on the same (seed, key): the exact Wilcoxon
signed-rank test and the exact sign test (no normal approximation, which is poor at n < 20),
plus the mean paired difference with its t interval. Pure Python and NumPy (no SciPy): the
t quantile inverts the regularized incomplete beta function by bisection.

Example:
    >>> round(t_quantile(0.975, 4), 4)  # the familiar table value
    2.7764
    >>> sign_test([1.0, 2.0, 0.5, 3.0, 1.5]).p_value  # 5 of 5 positive: 2 / 2**5
    0.0625
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from jaxwm.errors import VerificationError


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))):  # fmt: skip
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))  # fmt: skip
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: int) -> float:
    """Student-t distribution function with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(q: float, df: int) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom (bisection on the CDF).

    Args:
      q: Probability in (0, 1).
      df: Degrees of freedom, >= 1.

    Returns:
      ``t`` with ``P(T <= t) = q`` to about 1e-12.

    Example:
        >>> round(t_quantile(0.975, 1), 3)
        12.706
    """
    if not 0 < q < 1 or df < 1:
        raise VerificationError(f"t_quantile needs q in (0, 1) and df >= 1; got q={q}, df={df}")
    lo, hi = -1e7, 1e7
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < q else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, abs(mid)):
            break
    return 0.5 * (lo + hi)


@dataclasses.dataclass(frozen=True)
class MeanInterval:
    """A sample mean with its two-sided Student-t interval.

    Attributes:
      mean: Sample mean.
      low, high: Interval bounds (NaN when ``n < 2``: one value gives no spread).
      n: Number of values.
      std: Sample standard deviation (ddof 1; NaN when ``n < 2``).
    """

    mean: float
    low: float
    high: float
    n: int
    std: float

    def to_dict(self) -> dict[str, float | int]:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)


def _values(name: str, values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise VerificationError(
            f"{name} must be a non-empty sequence of finite numbers; got {values!r}"
        )
    return x


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> MeanInterval:
    """Mean of ``values`` with its ``confidence`` Student-t interval.

    Args:
      values: The sample (e.g. one clean accuracy per (seed, key) unit).
      confidence: Two-sided coverage in (0, 1).

    Returns:
      :class:`MeanInterval`; bounds are NaN for a single value.

    Example:
        >>> m = mean_interval([1.0, 2.0, 3.0])  # mean 2, s = 1, t(0.975, 2) = 4.303
        >>> round(m.low, 3), round(m.high, 3), m.n
        (-0.484, 4.484, 3)
    """
    x = _values("values", values)
    n, mean = x.size, float(x.mean())
    if n < 2:
        return MeanInterval(mean, math.nan, math.nan, n, math.nan)
    std = float(x.std(ddof=1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return MeanInterval(mean, mean - half, mean + half, n, std)


@dataclasses.dataclass(frozen=True)
class PairedTest:
    """An exact two-sided paired test.

    Attributes:
      statistic: ``W+`` (Wilcoxon: sum of the ranks of positive differences) or the number of
        positive differences (sign test).
      p_value: Exact two-sided p-value (1.0 when every difference is zero).
      n: Non-zero differences used (zeros are dropped, as in Wilcoxon's original test).
    """

    statistic: float
    p_value: float
    n: int


def sign_test(differences: Sequence[float]) -> PairedTest:
    """Exact two-sided sign test of "positive and negative differences are equally likely".

    Args:
      differences: Paired differences (zeros dropped).

    Returns:
      :class:`PairedTest` with the count of positive differences.
    """
    d = _values("differences", differences)
    d = d[d != 0]
    n, k = d.size, int((d > 0).sum())
    if n == 0:
        return PairedTest(0.0, 1.0, 0)
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2.0**n
    return PairedTest(float(k), min(1.0, 2.0 * tail), n)


def wilcoxon_signed_rank(differences: Sequence[float]) -> PairedTest:
    """Exact two-sided Wilcoxon signed-rank test (ties get mid-ranks; zeros dropped).

    The null distribution of ``W+`` is computed exactly for the observed (mid-)ranks by
    dynamic programming over the ``2**n`` sign patterns, so ties are handled without an
    approximation.

    Args:
      differences: Paired differences, e.g. partitioned minus baseline per (seed, key).

    Returns:
      :class:`PairedTest` with ``W+``.

    Example:
        >>> wilcoxon_signed_rank([0.5, 1.0, 1.5, 2.0, -0.2]).p_value  # W+ = 14 of 15: 4 / 32
        0.125
    """
    d = _values("differences", differences)
    d = d[d != 0]
    n = d.size
    if n == 0:
        return PairedTest(0.0, 1.0, 0)
    mag = np.abs(d)
    order = np.argsort(mag, kind="stable")
    ranks = np.empty(n)
    sorted_mag = mag[order]
    i = 0
    while i < n:  # mid-ranks for ties
        j = i
        while j + 1 < n and sorted_mag[j + 1] == sorted_mag[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    doubled = [round(2 * r) for r in ranks]  # mid-ranks are half-integers: exact integers
    counts = [0] * (sum(doubled) + 1)
    counts[0] = 1
    for r in doubled:  # number of sign patterns giving each doubled W+
        for s in range(len(counts) - 1, r - 1, -1):
            counts[s] += counts[s - r]
    w2 = round(2 * float(ranks[d > 0].sum()))
    total = 2**n
    lower = sum(counts[: w2 + 1]) / total
    upper = sum(counts[w2:]) / total
    return PairedTest(w2 / 2.0, min(1.0, 2.0 * min(lower, upper)), n)


def paired_comparison(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95
) -> dict[str, object]:
    """Compares paired samples ``a`` and ``b`` (same units, same order).

    Args:
      a: First method's values (e.g. partitioned), one per unit.
      b: Second method's values on the same units.
      confidence: Coverage of the interval of the mean difference.

    Returns:
      ``{"difference": MeanInterval of a - b, "wilcoxon": PairedTest, "sign": PairedTest,
      "wins": units with a > b, "losses": units with a < b}``.

    Example:
        >>> r = paired_comparison([0.9, 0.8, 0.7], [0.8, 0.7, 0.5])
        >>> round(r["difference"].mean, 3), r["wins"], r["wilcoxon"].p_value
        (0.133, 3, 0.25)
    """
    x, y = _values("a", a), _values("b", b)
    if x.shape != y.shape:
        raise VerificationError(f"paired samples need equal lengths; got {x.size} and {y.size}")
    diff = x - y
    return {
        "difference": mean_interval(diff, confidence),
        "wilcoxon": wilcoxon_signed_rank(diff),
        "sign": sign_test(diff),
        "wins": int((diff > 0).sum()),
        "losses": int((diff < 0).sum()),
    }
