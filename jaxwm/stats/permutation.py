"""Exact statistical tests for the ownership verifier: Fisher, permutation, intervals, thresholds.

:mod:`jaxwm.binomial` answers one question (how likely is an innocent model to reproduce ``k`` of
``n`` trigger labels when each matches with chance ``1/K``?). The tests here drop assumptions that
question makes, and all are exact (no normal, Poisson or asymptotic approximation):

* :func:`fisher_greater_log_pvalue` compares two match rates (suspect vs. an innocent reference
  model) with the one-sided Fisher exact test: conditioned on the total number of matches
  ``k1 + k2``, the suspect's count ``X`` is hypergeometric, and ``p = P(X >= k1)``. Summed with
  Python integers, so the p-value is the exact rational number before its logarithm is taken.
* :func:`permutation_log_pvalue` drops the ``1/K`` chance model altogether: under the null the
  trigger labels are exchangeable, so the number of matches ``M`` is compared with its
  distribution over all ``n!`` relabellings. The cells ``(i, j)`` with
  ``predicted[i] == labels[j]`` form a board that is a disjoint union of full ``a_c x b_c``
  rectangles (``a_c``, ``b_c``: how often class ``c`` occurs in each array), whose rook numbers
  are ``r_k = sum over classes of products of C(a_c, k_c) C(b_c, k_c) k_c!`` (the coefficients of
  the product of the per-class rook polynomials). Inclusion-exclusion then counts the
  permutations with at least ``m0 >= 1`` matches as
  ``sum_{k >= m0} (-1)^(k - m0) C(k - 1, m0 - 1) r_k (n - k)!``. The alternating sum cancels
  hundreds of digits, so it is done in exact integer arithmetic (:mod:`decimal` with every
  rounding trapped, whose huge multiplications use a number-theoretic transform; the polynomial
  product is one big multiplication per pair of classes by Kronecker substitution).
  :func:`permutation_log_pvalue_mc` is the seeded Monte-Carlo version for large ``n``.
* :func:`clopper_pearson` is the exact (conservative) binomial confidence interval.
* :func:`null_threshold_bounded` picks a retention threshold from ``m`` null (innocent) models
  with a distribution-free guarantee: with probability ``confidence`` over the null sample, a new
  null model exceeds it with probability at most ``fpr_bound`` (order statistics: the mass above
  the ``j``-th largest of ``m`` exchangeable values is ``Beta(j, m - j + 1)``).
* :func:`holm` / :func:`holm_adjusted` control the family-wise error over several tests.

Log p-values (natural logarithms) stay finite far below float underflow; the plain p-value
functions return ``exp`` of them. Pure Python, :mod:`math`, :mod:`decimal` and NumPy; invalid
arguments raise :class:`jaxwm.VerificationError` naming the argument.

Example:
    >>> # suspect reproduced 40/50 trigger labels, an innocent reference model 6/50
    >>> f"{fisher_greater_pvalue(40, 50, 6, 50):.3g}"
    '2.3e-12'
    >>> round(fisher_greater_log_pvalue(1000, 1000, 0, 5000) / math.log(10))  # p ~ 1e-1172
    -1172
"""

from __future__ import annotations

import decimal
import heapq
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from jaxwm.errors import VerificationError
from jaxwm.stats.binomial import binomial_log_pvalue

__all__ = [
    "NullThreshold",
    "clopper_pearson",
    "fisher_greater_log_pvalue",
    "fisher_greater_pvalue",
    "holm",
    "holm_adjusted",
    "null_threshold_bounded",
    "permutation_log_pvalue",
    "permutation_log_pvalue_mc",
    "permutation_pvalue",
]

# Largest n for the exact permutation test. Measured on one CPU core (Python 3.11): n = 1000 with
# 10 classes ~0.2 s, n = 5000 with 2 to 50 classes ~8-10 s. The rook polynomial has n
# coefficients of up to ~n log10(n) digits, so the cost grows faster than n^2; beyond this use
# the Monte-Carlo version.
PERMUTATION_EXACT_MAX_N = 5000


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------


def _check_int(name: str, v: Any, minimum: int = 0) -> int:
    # bool is an int subclass; True as a count is almost certainly a bug upstream.
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise VerificationError(f"{name} must be an int; got {type(v).__name__} {v!r}")
    if v < minimum:
        raise VerificationError(f"{name} must be >= {minimum}; got {v}")
    return int(v)


def _check_open_unit(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
        raise VerificationError(f"{name} must be a float in (0, 1); got {type(v).__name__} {v!r}")
    v = float(v)
    if not 0.0 < v < 1.0:  # also rejects NaN
        raise VerificationError(f"{name} must lie strictly between 0 and 1; got {v}")
    return v


def _check_label_array(name: str, x: Any) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise VerificationError(f"{name} must be a 1-D array; got shape {arr.shape}")
    if arr.size == 0:
        raise VerificationError(f"{name} must be non-empty")
    # bool arrays would pass an integer check via numpy's casting rules; labels are classes.
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise VerificationError(f"{name} must hold integer class labels; got dtype {arr.dtype}")
    return arr


def _check_pair(predicted: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    pred = _check_label_array("predicted", predicted)
    lab = _check_label_array("labels", labels)
    if pred.shape != lab.shape:
        raise VerificationError(
            f"predicted and labels must have equal length; got {pred.size} and {lab.size}"
        )
    return pred, lab


def _check_unit_floats(name: str, x: Any) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise VerificationError(f"{name} must be a 1-D sequence; got shape {arr.shape}")
    if arr.size == 0:
        raise VerificationError(f"{name} must be non-empty")
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise VerificationError(f"{name} must hold numbers in [0, 1]; got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0.0) or np.any(arr > 1.0):
        raise VerificationError(f"{name} must hold finite values in [0, 1]; got {arr.tolist()}")
    return arr


# --------------------------------------------------------------------------------------------
# Fisher's exact test
# --------------------------------------------------------------------------------------------


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
    k1, n1 = _check_int("k1", k1), _check_int("n1", n1)
    k2, n2 = _check_int("k2", k2), _check_int("n2", n2)
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


# --------------------------------------------------------------------------------------------
# Exact permutation test via rook polynomials
# --------------------------------------------------------------------------------------------


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
    pred, lab = _check_pair(predicted, labels)
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
    pred, lab = _check_pair(predicted, labels)
    rounds = _check_int("rounds", rounds, minimum=1)
    seed = _check_int("seed", seed)
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


# --------------------------------------------------------------------------------------------
# Clopper-Pearson interval
# --------------------------------------------------------------------------------------------


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
    k = _check_int("k", k)
    n = _check_int("n", n, minimum=1)
    if k > n:
        raise VerificationError(f"k must be <= n; got k={k}, n={n}")
    confidence = _check_open_unit("confidence", confidence)
    target_log = math.log((1.0 - confidence) / 2.0)
    lower = 0.0 if k == 0 else _solve_upper_tail(k, n, target_log)
    upper = 1.0 if k == n else 1.0 - _solve_upper_tail(n - k, n, target_log)
    return lower, upper


# --------------------------------------------------------------------------------------------
# Distribution-free null threshold
# --------------------------------------------------------------------------------------------


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
    values = _check_unit_floats("null_retentions", null_retentions)
    fpr = _check_open_unit("fpr", fpr)
    confidence = _check_open_unit("confidence", confidence)
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


# --------------------------------------------------------------------------------------------
# Holm-Bonferroni
# --------------------------------------------------------------------------------------------


def _check_pvalues(pvalues: Sequence[float]) -> list[float]:
    return _check_unit_floats("pvalues", pvalues).tolist()


def holm_adjusted(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values: hypothesis ``i`` is rejected at level ``alpha`` iff ``adj[i] <= alpha``.

    With ``p_(1) <= ... <= p_(m)`` sorted, ``adj_(i) = max_{l <= i} min(1, (m - l + 1) p_(l))``;
    the running maximum makes them monotone in the p-values, as the step-down procedure is.

    Args:
        pvalues: Non-empty sequence of p-values in [0, 1].

    Returns:
        Adjusted p-values in the input order, capped at 1.

    Example:
        >>> [round(p, 6) for p in holm_adjusted([0.01, 0.04, 0.03])]
        [0.03, 0.06, 0.06]
    """
    ps = _check_pvalues(pvalues)
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])  # stable: ties keep input order
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        adjusted[i] = running
    return adjusted


def holm(pvalues: Sequence[float], alpha: float) -> list[bool]:
    """Holm-Bonferroni step-down test: which hypotheses are rejected at family-wise level ``alpha``.

    Sort the p-values ascending and reject ``p_(i)`` while ``p_(i) <= alpha / (m - i + 1)``; stop
    at the first that fails. Controls the probability of any false rejection at ``alpha`` under
    arbitrary dependence, and is uniformly more powerful than plain Bonferroni.

    Args:
        pvalues: Non-empty sequence of p-values in [0, 1].
        alpha: Family-wise error level in (0, 1).

    Returns:
        One bool per hypothesis, in input order: True where rejected.

    Example:
        >>> holm([0.01, 0.04, 0.03], alpha=0.05)  # 0.01 <= 0.05/3; then 0.03 > 0.05/2 stops
        [True, False, False]
    """
    ps = _check_pvalues(pvalues)
    alpha = _check_open_unit("alpha", alpha)
    m = len(ps)
    rejected = [False] * m
    for rank, i in enumerate(sorted(range(m), key=lambda i: ps[i])):
        if ps[i] > alpha / (m - rank):
            break
        rejected[i] = True
    return rejected
