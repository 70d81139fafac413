"""Exact bounds from the binomial tail: Clopper-Pearson intervals and the null-model threshold.

Both invert :func:`jaxwm.stats.binomial.binomial_log_pvalue` by bisection, so neither uses a
normal or asymptotic approximation:

* :func:`clopper_pearson` is the exact (conservative) two-sided confidence interval of a
  binomial proportion (a verdict reports it for the retention).
* :func:`null_threshold_bounded` picks a retention threshold from ``m`` null (innocent) models
  with a distribution-free guarantee: with probability ``confidence`` over the null sample, a new
  null model exceeds it with probability at most ``fpr_bound`` (order statistics: the mass above
  the ``j``-th largest of ``m`` exchangeable values is ``Beta(j, m - j + 1)``).

Example:
    >>> [round(x, 4) for x in clopper_pearson(5, 10)]
    [0.1871, 0.8129]
    >>> null_threshold_bounded([0.1] * 58 + [0.2]).sufficient  # 59 models: 5% at 95%
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxwm.errors import VerificationError
from jaxwm.stats._checks import check_int, check_open_unit, check_unit_floats
from jaxwm.stats.binomial import binomial_log_pvalue


def _solve_upper_tail(k: int, n: int, target_log: float) -> float:
    """The p in (0, 1) with log P(Bin(n, p) >= k) = target_log, for 1 <= k <= n (bisection).

    The tail increases strictly in p from 0 (p = 0) to 1 (p = 1), so the root is unique.
    """
    lo, hi = 0.0, 1.0
    while hi - lo > 1e-13:
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):  # no representable point left between them
            break
        if binomial_log_pvalue(k, n, mid) < target_log:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided Clopper-Pearson confidence interval for a binomial proportion.

    The lower end ``L`` solves ``P(X >= k | L) = (1 - confidence) / 2`` and the upper end ``U``
    solves ``P(X <= k | U) = (1 - confidence) / 2``, both by bisection on the exact binomial tail
    (absolute error about 1e-13). ``P(X <= k | U)`` is evaluated as ``P(n - X >= n - k)`` with
    ``n - X ~ Bin(n, 1 - U)``, i.e. ``U = 1 - L(n - k)``, so no small tail is formed by
    subtracting from one. The interval covers the true proportion with probability at least
    ``confidence`` (it is conservative because the binomial is discrete).

    Args:
        k: Successes (``0 <= k <= n``).
        n: Trials (``n >= 1``).
        confidence: Two-sided confidence level in (0, 1).

    Returns:
        ``(lower, upper)``; ``lower = 0`` when ``k = 0`` and ``upper = 1`` when ``k = n``.

    Example:
        >>> lo, hi = clopper_pearson(0, 10)
        >>> lo, round(hi, 6)  # 1 - 0.025 ** (1 / 10)
        (0.0, 0.308497)
    """
    k = check_int("k", k)
    n = check_int("n", n, minimum=1)
    if k > n:
        raise VerificationError(f"k must be <= n; got k={k}, n={n}")
    confidence = check_open_unit("confidence", confidence)
    target_log = math.log((1.0 - confidence) / 2.0)
    lower = 0.0 if k == 0 else _solve_upper_tail(k, n, target_log)
    upper = 1.0 if k == n else 1.0 - _solve_upper_tail(n - k, n, target_log)
    return lower, upper


@dataclass(frozen=True)
class NullThreshold:
    """A retention threshold from null models with a guaranteed false-positive rate.

    Attributes:
        threshold: Ownership requires a suspect's retention strictly greater than this.
        order: ``j``: the threshold is the ``j``-th largest null retention (1 = the maximum).
        m: Number of null retentions it was chosen from.
        fpr: The requested false-positive rate.
        confidence: Probability (over the null sample) that the guarantee holds.
        fpr_bound: With probability ``confidence``, a new independent null model exceeds the
            threshold with probability at most this.
        sufficient: ``fpr_bound <= fpr``; False when there are too few null models for the
            requested guarantee (then ``order = 1`` and ``fpr_bound`` is what ``m`` allows).
    """

    threshold: float
    order: int
    m: int
    fpr: float
    confidence: float
    fpr_bound: float
    sufficient: bool


def _log_lower_tail(j: int, m: int, x: float) -> float:
    # log P(Bin(m, x) <= j - 1) = log P(Bin(m, 1 - x) >= m - j + 1): an upper tail, computed
    # without forming 1 - (something close to 1).
    return binomial_log_pvalue(m - j + 1, m, 1.0 - x)


def null_threshold_bounded(
    null_retentions: Any, fpr: float = 0.05, confidence: float = 0.95
) -> NullThreshold:
    """Distribution-free ownership threshold from ``m`` null retentions (a tolerance bound).

    For ``m`` exchangeable null retentions with continuous distribution ``F``, the probability
    mass above the ``j``-th largest value ``X_(m-j+1)``, i.e. the false-positive rate
    ``1 - F(X_(m-j+1))`` of the rule "retention > threshold", is ``Beta(j, m - j + 1)``
    distributed, and ``P(Beta(j, m - j + 1) > x) = P(Bin(m, x) <= j - 1)`` exactly. The largest
    ``j`` (lowest threshold, most power) with ``P(Bin(m, fpr) <= j - 1) <= 1 - confidence`` is
    chosen. Ties (a discrete ``F``) only make the strict ``>`` rule more conservative.

    ``fpr_bound`` solves ``P(Bin(m, x) <= j - 1) = 1 - confidence``; for ``j = 1`` that is
    ``1 - (1 - confidence)^(1/m)``. If even the maximum does not reach ``fpr`` (for ``fpr = 0.05``
    and ``confidence = 0.95`` that needs ``m >= 59``), the maximum is used and
    ``sufficient=False``.

    Args:
        null_retentions: 1-D sequence of retentions in [0, 1] of independent null models.
        fpr: Target false-positive rate in (0, 1).
        confidence: Probability in (0, 1) that the realised false-positive rate is <= fpr_bound.

    Returns:
        The :class:`NullThreshold`.

    Example:
        >>> t = null_threshold_bounded([0.1, 0.3, 0.2])
        >>> t.threshold, t.order, t.sufficient, round(t.fpr_bound, 4)  # 1 - 0.05 ** (1/3)
        (0.3, 1, False, 0.6316)
    """
    values = check_unit_floats("null_retentions", null_retentions)
    fpr = check_open_unit("fpr", fpr)
    confidence = check_open_unit("confidence", confidence)
    m = int(values.size)
    log_alpha = math.log1p(-confidence)

    def ok(j: int) -> bool:
        return _log_lower_tail(j, m, fpr) <= log_alpha

    # P(Bin(m, fpr) <= j - 1) grows with j, so the admissible j form a prefix 1..j*; bisect it.
    if ok(1):
        lo, hi = 1, m + 1  # ok(lo) holds; ok(m + 1) fails (the tail is then 1)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if ok(mid) else (lo, mid)
        order = lo
    else:
        order = 1

    if order == 1:
        # (1 - x)^m = 1 - confidence in closed form; expm1/log1p keep small bounds accurate.
        bound = -math.expm1(log_alpha / m)
    else:
        # The lower tail falls strictly in x; bisect for the smallest x where it is <= alpha.
        lo_x, hi_x = 0.0, 1.0
        while hi_x - lo_x > 1e-13:
            mid = 0.5 * (lo_x + hi_x)
            if _log_lower_tail(order, m, mid) <= log_alpha:
                hi_x = mid
            else:
                lo_x = mid
        bound = hi_x
    threshold = float(np.sort(values)[::-1][order - 1])
    return NullThreshold(
        threshold=threshold,
        order=order,
        m=m,
        fpr=fpr,
        confidence=confidence,
        fpr_bound=bound,
        sufficient=bound <= fpr,
    )
