"""One-sided Fisher exact test: does the suspect's match rate exceed a reference rate?

The control test of :mod:`jaxwm.verify` compares the suspect's matches on the owner's triggers
(``k1`` of ``n1``) with its matches on fresh-key control triggers (``k2`` of ``n2``).
Conditioned on the total number of matches ``k1 + k2``, the count ``X`` in the first sample is
hypergeometric, and ``p = P(X >= k1)``. The tail is summed with Python integers, so the p-value
is the exact rational number before its logarithm is taken: it stays finite far below float
underflow.

Example:
    >>> # suspect reproduced 40/50 trigger labels, an innocent reference model 6/50
    >>> f"{fisher_greater_pvalue(40, 50, 6, 50):.3g}"
    '2.3e-12'
    >>> round(fisher_greater_log_pvalue(1000, 1000, 0, 5000) / math.log(10))  # p ~ 1e-1172
    -1172
"""

from __future__ import annotations

import math

from jaxwm.errors import VerificationError
from jaxwm.stats._checks import check_int


def fisher_greater_log_pvalue(k1: int, n1: int, k2: int, n2: int) -> float:
    """Natural log of the one-sided Fisher exact p-value that rate ``k1/n1`` exceeds ``k2/n2``.

    Conditioned on the total ``k1 + k2`` successes, the successes in sample 1 follow
    ``X ~ Hypergeometric(population n1 + n2, successes k1 + k2, draws n1)``; the p-value is
    ``P(X >= k1)``, summed exactly as a ratio of Python integers before the log is taken, so it
    stays finite (and accurate) far below float underflow. Each tail term costs one step on an
    integer of ~``log2 C(n1 + n2, n1)`` bits, so the time grows roughly quadratically: about 4 s
    for ``n1 = n2 = 100_000`` (one CPU core), milliseconds for hundreds of triggers.

    Args:
        k1: Successes in sample 1 (e.g. trigger labels the suspect reproduced).
        n1: Size of sample 1.
        k2: Successes in sample 2 (e.g. matches of an innocent reference model).
        n2: Size of sample 2.

    Returns:
        ``log P(X >= k1)``; exactly ``0.0`` when ``P = 1``.

    Example:
        >>> round(math.exp(fisher_greater_log_pvalue(3, 3, 0, 3)), 4)  # 1 / C(6, 3)
        0.05
    """
    k1, n1 = check_int("k1", k1), check_int("n1", n1)
    k2, n2 = check_int("k2", k2), check_int("n2", n2)
    if k1 > n1:
        raise VerificationError(f"k1 must be <= n1; got k1={k1}, n1={n1}")
    if k2 > n2:
        raise VerificationError(f"k2 must be <= n2; got k2={k2}, n2={n2}")
    total, succ = n1 + n2, k1 + k2
    fail = total - succ
    hi = min(n1, succ)
    # term_x = C(succ, x) C(fail, n1 - x). The ratio term_{x+1}/term_x is
    # (succ - x)(n1 - x) / ((x + 1)(fail - n1 + x + 1)); the product on the left is an integer,
    # so the integer division is exact and each step costs O(digits) instead of two math.comb.
    term = math.comb(succ, k1) * math.comb(fail, n1 - k1)
    num = term
    for x in range(k1, hi):
        term = term * (succ - x) * (n1 - x) // ((x + 1) * (fail - n1 + x + 1))
        num += term
    den = math.comb(total, n1)
    if num >= den:  # the whole support: p = 1 exactly
        return 0.0
    # math.log accepts arbitrarily large ints (it scales by the bit length internally).
    return math.log(num) - math.log(den)


def fisher_greater_pvalue(k1: int, n1: int, k2: int, n2: int) -> float:
    """One-sided Fisher exact p-value ``P(X >= k1)``; ``exp`` of :func:`fisher_greater_log_pvalue`.

    Args:
        k1: Successes in sample 1.
        n1: Size of sample 1.
        k2: Successes in sample 2.
        n2: Size of sample 2.

    Returns:
        The p-value (``0.0`` once it underflows; use the log version there).

    Example:
        >>> fisher_greater_pvalue(0, 5, 5, 5)
        1.0
    """
    return math.exp(fisher_greater_log_pvalue(k1, n1, k2, n2))
