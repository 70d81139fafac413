"""Exact one-sided binomial tail probabilities ``P(X >= k)`` for ``X ~ Bin(n, p)``.

The ownership test of :mod:`jaxwm.verify` asks how likely an innocent model is to reproduce ``k``
of ``n`` secret trigger labels when each matches by chance with probability ``p = 1/K``. The
answer is the upper tail of the binomial distribution, computed here *exactly* (no normal or
Poisson approximation) and in floating point without catastrophic cancellation:

* each probability mass ``P(X = k)`` is Loader's (2000) saddle-point form, a sum of small,
  well-conditioned terms (Stirling-formula errors and deviance terms) instead of differences of
  ``lgamma`` values of size ``n log n``;
* the tail is summed from its largest term outwards through the exact term ratios
  ``t_{i+1} / t_i = (n - i) / (i + 1) * p / (1 - p)``, stopping once terms no longer change the
  sum; for ``k`` at or below the mean, where ``P(X >= k)`` is at least about 1/2, the lower tail
  ``P(X <= k - 1)`` is summed the same way and subtracted from one without loss.

Relative accuracy is about 1e-13 for ``n`` up to 1e5 and beyond. :func:`binomial_log_pvalue`
stays finite far below float underflow, where :func:`binomial_pvalue` returns ``0.0``. Pure
Python and ``math``; NumPy only for argument checks.

Example:
    >>> # 21 of 100 trigger labels reproduced with K = 10 classes (chance 10 %)
    >>> f"{binomial_pvalue(21, 100, 0.1):.3g}"
    '0.000808'
    >>> round(binomial_log_pvalue(1000, 1000, 0.1) / math.log(10))  # p = 1e-1000, no underflow
    -1000
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from jaxwm.errors import VerificationError

# Loader (2000), "Fast and accurate computation of binomial probabilities": the log pmf as a sum
# of small, well-conditioned terms. Naive lgamma(n+1) - lgamma(k+1) - ... cancels numbers of size
# n log n (~1e6 at n = 1e5) and loses about six digits; this form keeps ~15.
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _stirlerr(n: float) -> float:
    """log(n!) - log(sqrt(2 pi n) (n/e)^n), the error of Stirling's formula."""
    if n <= 15.0:  # small: direct formula, whose terms are small enough not to cancel badly
        return math.lgamma(n + 1.0) - (n + 0.5) * math.log(n) + n - _HALF_LOG_2PI
    nn = n * n
    s0, s1, s2, s3, s4 = 1 / 12, 1 / 360, 1 / 1260, 1 / 1680, 1 / 1188
    if n > 500:
        return (s0 - s1 / nn) / n
    if n > 80:
        return (s0 - (s1 - s2 / nn) / nn) / n
    if n > 35:
        return (s0 - (s1 - (s2 - s3 / nn) / nn) / nn) / n
    return (s0 - (s1 - (s2 - (s3 - s4 / nn) / nn) / nn) / nn) / n


def _bd0(x: float, m: float) -> float:
    """x log(x/m) + m - x, accurate also when x is close to m (series in v = (x-m)/(x+m))."""
    if abs(x - m) < 0.1 * (x + m):
        v = (x - m) / (x + m)
        s = (x - m) * v
        ej = 2.0 * x * v
        v2 = v * v
        for j in range(1, 1000):
            ej *= v2
            s1 = s + ej / (2 * j + 1)
            if s1 == s:
                return s1
            s = s1
        return s
    return x * math.log(x / m) + m - x


def _log_pmf(k: int, n: int, p: float, q: float) -> float:
    if k == 0:
        return n * math.log1p(-p) if p < 0.5 else n * math.log(q)
    if k == n:
        return n * math.log(p)
    lc = _stirlerr(n) - _stirlerr(k) - _stirlerr(n - k) - _bd0(k, n * p) - _bd0(n - k, n * q)
    return lc - 0.5 * (math.log(2.0 * math.pi) + math.log(k) + math.log1p(-k / n))


def binomial_log_pvalue(k: int, n: int, p: float) -> float:
    """Natural log of :func:`binomial_pvalue`; finite far below float underflow (1e-308).

    Args:
        k: Observed matches.
        n: Trials.
        p: Success probability under the null.

    Returns:
        ``log P(X >= k)`` for ``X ~ Bin(n, p)``; ``0.0`` for ``k <= 0``, ``-inf`` if impossible.

    Example:
        >>> round(binomial_log_pvalue(100, 100, 0.5) / math.log(0.5))
        100
    """
    k, n, p = _check_binomial(k, n, p)
    if k <= 0:
        return 0.0
    if k > n or p == 0.0:
        return -math.inf
    if p == 1.0:
        return 0.0
    q = 1.0 - p
    ratio = p / q
    if k > n * p:
        # Upper tail: k is at or past the mode, so terms fall from t_k onwards; sum t_i / t_k.
        total, term = 1.0, 1.0
        for i in range(k, n):
            term *= (n - i) / (i + 1) * ratio
            total += term
            if term < total * 1e-17:
                break
        return _log_pmf(k, n, p, q) + math.log(total)
    # k at or below the mean: P(X >= k) >= ~1/2, so 1 - P(X <= k-1) loses no relative accuracy.
    # Terms fall from t_{k-1} downwards.
    total, term = 1.0, 1.0
    for i in range(k - 1, 0, -1):
        term *= i / (n - i + 1) / ratio
        total += term
        if term < total * 1e-17:
            break
    lower = math.exp(_log_pmf(k - 1, n, p, q)) * total
    return math.log1p(-min(lower, 1.0))


def binomial_pvalue(k: int, n: int, p: float) -> float:
    """One-sided exact binomial p-value ``P(X >= k)``, ``X ~ Bin(n, p)``.

    Summed in a numerically stable way (Loader's saddle-point pmf plus term ratios), accurate to
    about 1e-13 relative for ``n`` up to 1e5 and beyond, including p-values like 1e-200.

    Args:
        k: Observed number of triggers whose label the suspect reproduced.
        n: Number of triggers queried.
        p: Chance of a match for an innocent model (``1/K``).

    Returns:
        The p-value; exactly ``1.0`` for ``k <= 0`` and ``0.0`` for ``k > n``.

    Example:
        >>> binomial_pvalue(10, 10, 0.1)  # doctest: +ELLIPSIS
        1.0000000000000...e-10
    """
    return math.exp(binomial_log_pvalue(k, n, p)) if k > 0 else 1.0


def _check_binomial(k: Any, n: Any, p: Any) -> tuple[int, int, float]:
    for name, v in (("k", k), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise VerificationError(f"{name} must be an int; got {type(v).__name__} {v!r}")
    if n < 0:
        raise VerificationError(f"n must be >= 0; got {n}")
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise VerificationError(f"p must lie in [0, 1]; got {p}")
    return int(k), int(n), p
