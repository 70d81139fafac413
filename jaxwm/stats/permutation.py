"""Exact label-permutation test via rook polynomials, and its Monte-Carlo version for large ``n``.

:func:`permutation_log_pvalue` drops the ``1/K`` chance model of the binomial test: under the
null the trigger labels are exchangeable, so the number of matches ``M`` is compared with its
distribution over all ``n!`` relabellings. The cells ``(i, j)`` with ``predicted[i] == labels[j]``
form a board that is a disjoint union of full ``a_c x b_c`` rectangles (``a_c``, ``b_c``: how
often class ``c`` occurs in each array), whose rook numbers are
``r_k = sum over classes of products of C(a_c, k_c) C(b_c, k_c) k_c!`` (the coefficients of the
product of the per-class rook polynomials). Inclusion-exclusion then counts the permutations
with at least ``m0 >= 1`` matches as ``sum_{k >= m0} (-1)^(k - m0) C(k - 1, m0 - 1) r_k (n - k)!``.
The alternating sum cancels hundreds of digits, so it is done in exact integer arithmetic
(:mod:`decimal` with every rounding trapped, whose huge multiplications use a number-theoretic
transform; the polynomial product is one big multiplication per pair of classes by Kronecker
substitution). :func:`permutation_log_pvalue_mc` is the seeded Monte-Carlo version for large
``n``.

Example:
    >>> # 3 of 4 labels reproduced; the lone 1 predicted right, as in half of all relabellings
    >>> round(permutation_pvalue([0, 0, 1, 0], [0, 0, 1, 1]), 9)
    0.5
"""

from __future__ import annotations

import decimal
import heapq
import math
from collections import Counter
from decimal import Decimal
from typing import Any

import numpy as np

from jaxwm.errors import VerificationError
from jaxwm.stats._checks import check_int, check_label_pair

# Largest n for the exact permutation test. Measured on one CPU core (Python 3.11): n = 1000 with
# 10 classes ~0.2 s, n = 5000 with 2 to 50 classes ~8-10 s. The rook polynomial has n
# coefficients of up to ~n log10(n) digits, so the cost grows faster than n^2; beyond this use
# the Monte-Carlo version.
PERMUTATION_EXACT_MAX_N = 5000


def _exact_context() -> decimal.Context:
    # Unlimited precision with every rounding trapped: any inexact step raises instead of silently
    # losing digits, so the integers below are exact by construction.
    return decimal.Context(
        prec=decimal.MAX_PREC,
        Emax=decimal.MAX_EMAX,
        Emin=decimal.MIN_EMIN,
        traps=[decimal.Inexact, decimal.Rounded, decimal.InvalidOperation, decimal.Overflow],
    )


def _digits(x: Decimal) -> str:
    # Plain digits: every value here is a non-negative integer with exponent 0.
    return format(x, "f")


def _poly_mul(p: list[Decimal], q: list[Decimal], ctx: decimal.Context) -> list[Decimal]:
    """Product of two polynomials with non-negative integer coefficients (Kronecker substitution).

    Packing each polynomial into one integer with ``D`` decimal digits per coefficient turns the
    product into a single big multiplication, which libmpdec does by number-theoretic transform
    (quasi-linear) instead of ``len(p) * len(q)`` multiplications of large numbers.
    """
    # Every coefficient of p*q is at most p(1) q(1), so D digits per slot never carry over.
    width = len(_digits(ctx.multiply(sum(p, Decimal(0)), sum(q, Decimal(0)))))

    def pack(poly: list[Decimal]) -> Decimal:
        return Decimal("".join(_digits(c).zfill(width) for c in reversed(poly)))

    deg = len(p) + len(q) - 2
    s = _digits(ctx.multiply(pack(p), pack(q))).zfill(width * (deg + 1))
    end = len(s)
    return [Decimal(s[end - (k + 1) * width : end - k * width]) for k in range(deg + 1)]


def _rectangle_rook(a: int, b: int, ctx: decimal.Context) -> list[Decimal]:
    # r_k = C(a, k) C(b, k) k!: choose k rows, k columns and a matching between them.
    out, t = [Decimal(1)], Decimal(1)
    for k in range(min(a, b)):
        t = ctx.divide_int(ctx.multiply(t, (a - k) * (b - k)), k + 1)  # exact: r_{k+1} integer
        out.append(t)
    return out


def _log_decimal(x: Decimal) -> float:
    # log of a huge positive integer without converting it to float (which would overflow).
    e = x.adjusted()
    mantissa = decimal.Context(prec=30).scaleb(x, -e)
    return math.log(float(mantissa)) + e * math.log(10.0)


def permutation_log_pvalue(predicted: Any, labels: Any) -> float:
    """Natural log of the exact label-permutation p-value of ``M = #{i: predicted[i] == labels[i]}``.

    Null hypothesis: the labels are exchangeable (the suspect's predictions carry no information
    about which trigger got which label). Then ``M`` is compared with
    ``M(sigma) = #{i: predicted[i] == labels[sigma(i)]}`` over all ``n!`` permutations ``sigma``,
    and ``p = P(M(sigma) >= M)``, counted exactly by rook polynomials and inclusion-exclusion
    (see the module docstring). Unlike the binomial test it does not assume a ``1/K`` chance
    rate, so class imbalance in labels or predictions cannot inflate significance. A constant
    label set gives ``p = 1`` for any predictions (``M`` does not change under permutation).

    Args:
        predicted: 1-D integer array, the suspect's predicted class per trigger.
        labels: 1-D integer array of the same length ``n >= 1``, the secret trigger labels.
            ``n`` may be at most 5000 (about 10 s); use :func:`permutation_log_pvalue_mc` beyond.

    Returns:
        ``log P(M(sigma) >= M)``; exactly ``0.0`` when ``p = 1``.

    Example:
        >>> # all 4 labels reproduced, 4 distinct classes: only the identity matches, p = 1/4!
        >>> round(math.exp(permutation_log_pvalue([0, 1, 2, 3], [0, 1, 2, 3])) * 24, 9)
        1.0
    """
    pred, lab = check_label_pair(predicted, labels)
    n = int(pred.size)
    if n > PERMUTATION_EXACT_MAX_N:
        raise VerificationError(
            f"predicted/labels have n={n} > {PERMUTATION_EXACT_MAX_N} entries, too many for the "
            "exact permutation test; use permutation_log_pvalue_mc"
        )
    m0 = int(np.count_nonzero(pred == lab))
    if m0 == 0:
        return 0.0
    a, b = Counter(pred.tolist()), Counter(lab.tolist())
    ctx = _exact_context()
    # Per-class rook polynomials; multiply the two smallest first (a Huffman-like order keeps the
    # big multiplications balanced, which is where the transform is efficient).
    heap = [
        (min(a[c], b[c]), i, _rectangle_rook(a[c], b[c], ctx)) for i, c in enumerate(a) if c in b
    ]
    heapq.heapify(heap)
    tiebreak = len(heap)
    while len(heap) > 1:
        _, _, p = heapq.heappop(heap)
        _, _, q = heapq.heappop(heap)
        heapq.heappush(heap, (len(p) + len(q) - 2, tiebreak, _poly_mul(p, q, ctx)))
        tiebreak += 1
    rook = heap[0][2]  # non-empty: m0 >= 1 means some class occurs in both arrays
    deg = len(rook) - 1

    # count(M >= m0) = sum_{k >= m0} (-1)^(k - m0) C(k - 1, m0 - 1) r_k (n - k)!
    fact = Decimal(1)  # (n - m0)!
    for i in range(2, n - m0 + 1):
        fact = ctx.multiply(fact, i)
    n_fact = fact
    for i in range(n - m0 + 1, n + 1):
        n_fact = ctx.multiply(n_fact, i)
    binom = Decimal(1)  # C(k - 1, m0 - 1) at k = m0
    count = Decimal(0)
    for k in range(m0, deg + 1):
        term = ctx.multiply(ctx.multiply(binom, rook[k]), fact)
        count = ctx.add(count, term) if (k - m0) % 2 == 0 else ctx.subtract(count, term)
        if k < n:
            fact = ctx.divide_int(fact, n - k)  # (n - k - 1)!
        binom = ctx.divide_int(ctx.multiply(binom, k), k - m0 + 1)  # C(k, m0 - 1)
    if not 0 < count <= n_fact:  # cannot happen for exact arithmetic; guards against a bug
        raise AssertionError(f"permutation count {count} outside (0, n!]")
    if count == n_fact:
        return 0.0
    return _log_decimal(count) - _log_decimal(n_fact)


def permutation_pvalue(predicted: Any, labels: Any) -> float:
    """Exact label-permutation p-value; ``exp`` of :func:`permutation_log_pvalue`.

    Args:
        predicted: 1-D integer array of predicted classes.
        labels: 1-D integer array of trigger labels, same length.

    Returns:
        ``P(M(sigma) >= M)`` over uniformly random permutations ``sigma`` of the labels.

    Example:
        >>> round(permutation_pvalue([0, 0, 1, 1], [0, 0, 1, 1]), 6)  # 4 of 24 perms: 2! * 2!
        0.166667
    """
    return math.exp(permutation_log_pvalue(predicted, labels))


def permutation_log_pvalue_mc(
    predicted: Any, labels: Any, *, rounds: int = 100_000, seed: int = 0
) -> float:
    """Seeded Monte-Carlo version of :func:`permutation_log_pvalue` for any ``n``.

    Draws ``rounds`` uniform permutations and returns ``log((1 + c) / (rounds + 1))`` with
    ``c = #{b: M_b >= M}``. Counting the observed labelling as one of the draws makes this a
    valid p-value (``P(p <= u) <= u`` under the null) for any number of rounds, never 0; its
    resolution is ``1 / (rounds + 1)``.

    Args:
        predicted: 1-D integer array of predicted classes.
        labels: 1-D integer array of trigger labels, same length.
        rounds: Number of random permutations (>= 1).
        seed: Seed of the NumPy generator; equal seeds give equal results.

    Returns:
        The natural log of the Monte-Carlo p-value.

    Example:
        >>> permutation_log_pvalue_mc([0, 1], [1, 0], rounds=10)  # M = 0: every draw counts
        0.0
    """
    pred, lab = check_label_pair(predicted, labels)
    rounds = check_int("rounds", rounds, minimum=1)
    seed = check_int("seed", seed)
    n = int(pred.size)
    m_obs = int(np.count_nonzero(pred == lab))
    rng = np.random.default_rng(seed)
    chunk = max(1, min(rounds, 4_000_000 // n))  # bound memory to ~32 MB of int64 per chunk
    hits, done = 0, 0
    while done < rounds:
        b = min(chunk, rounds - done)
        perms = rng.permuted(np.broadcast_to(lab, (b, n)), axis=1)  # one shuffle per row
        hits += int(np.count_nonzero((perms == pred).sum(axis=1) >= m_obs))
        done += b
    return math.log((1 + hits) / (rounds + 1))
