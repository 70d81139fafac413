"""Tests for jaxwm.stats: Fisher, exact/MC permutation tests, Clopper-Pearson, null bound, Holm."""

from __future__ import annotations

import doctest
import itertools
import math
import time
from fractions import Fraction

import numpy as np
import pytest

from jaxwm import stats
from jaxwm.errors import VerificationError
from jaxwm.stats import (
    NullThreshold,
    binomial,
    clopper_pearson,
    fisher,
    fisher_greater_log_pvalue,
    fisher_greater_pvalue,
    holm,
    holm_adjusted,
    intervals,
    multiple,
    null_threshold_bounded,
    paired,
    permutation,
    permutation_log_pvalue,
    permutation_log_pvalue_mc,
    permutation_pvalue,
)

# ---------------------------------------------------------------------------------------------
# Fisher
# ---------------------------------------------------------------------------------------------

_FISHER_CASES = [
    (3, 3, 0, 3),
    (40, 50, 6, 50),
    (0, 5, 5, 5),
    (5, 5, 0, 5),
    (1, 10, 1, 10),
    (7, 20, 3, 30),
    (0, 0, 3, 4),
    (30, 100, 10, 100),
    (250, 1000, 100, 1000),
    (12, 13, 40, 500),
    (2, 3, 90, 100),
]


@pytest.mark.parametrize("k1,n1,k2,n2", _FISHER_CASES)
def test_fisher_matches_scipy(k1, n1, k2, n2):
    stats = pytest.importorskip("scipy.stats")
    expected = stats.hypergeom.sf(k1 - 1, n1 + n2, k1 + k2, n1)
    got = fisher_greater_pvalue(k1, n1, k2, n2)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-300)
    if n1 and n2:
        table = [[k1, n1 - k1], [k2, n2 - k2]]
        fe = stats.fisher_exact(table, alternative="greater").pvalue
        assert got == pytest.approx(fe, rel=1e-6)


def test_fisher_exact_rational_values():
    # 1 / C(6, 3): the only table as extreme as 3/3 vs 0/3.
    assert fisher_greater_pvalue(3, 3, 0, 3) == pytest.approx(1 / 20, rel=1e-15)
    # P(X >= 2), X ~ Hypergeom(N=6, K=3, draws 3) = (C(3,2)C(3,1) + 1) / 20 = 10/20.
    assert fisher_greater_pvalue(2, 3, 1, 3) == pytest.approx(0.5, rel=1e-15)
    assert fisher_greater_pvalue(0, 5, 5, 5) == 1.0
    assert fisher_greater_log_pvalue(0, 0, 3, 4) == 0.0


def test_fisher_tiny_pvalue_stays_finite():
    # p = 1 / C(6000, 1000) ~ 1e-1172: far below float underflow.
    lp = fisher_greater_log_pvalue(1000, 1000, 0, 5000)
    expected = -(math.lgamma(6001) - math.lgamma(1001) - math.lgamma(5001))
    assert math.isfinite(lp)
    assert lp == pytest.approx(expected, rel=1e-12)
    assert lp / math.log(10) == pytest.approx(-1172.198, abs=1e-3)
    assert fisher_greater_pvalue(1000, 1000, 0, 5000) == 0.0
    # 1e-300-ish region, where exp still represents it: 1 / C(1100, 150)
    lp2 = fisher_greater_log_pvalue(150, 150, 0, 950)
    assert lp2 == pytest.approx(-math.log(math.comb(1100, 150)), rel=1e-13)


@pytest.mark.parametrize(
    "args,match",
    [
        ((1.0, 3, 0, 3), "k1 must be an int"),
        ((True, 3, 0, 3), "k1 must be an int"),
        ((1, 3, -1, 3), "k2 must be >= 0"),
        ((4, 3, 0, 3), "k1 must be <= n1"),
        ((1, 3, 5, 4), "k2 must be <= n2"),
        ((1, -3, 0, 3), "n1 must be >= 0"),
    ],
)
def test_fisher_rejects_bad_arguments(args, match):
    with pytest.raises(VerificationError, match=match):
        fisher_greater_log_pvalue(*args)


# ---------------------------------------------------------------------------------------------
# Exact permutation test
# ---------------------------------------------------------------------------------------------


def _brute_force_counts(pred, lab):
    """Distribution of M(sigma) over all n! permutations: {m: count}."""
    counts: dict[int, int] = {}
    for perm in itertools.permutations(range(len(lab))):
        m = sum(pred[i] == lab[j] for i, j in enumerate(perm))
        counts[m] = counts.get(m, 0) + 1
    return counts


def _brute_tail(counts, m0):
    return Fraction(sum(c for m, c in counts.items() if m >= m0), sum(counts.values()))


@pytest.mark.parametrize("seed", range(12))
def test_permutation_matches_brute_force_random(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 8))  # n <= 7: 5040 permutations
    k = int(rng.integers(1, 4))
    pred = rng.integers(0, k + 1, n)  # predictions may use a class absent from labels
    lab = rng.integers(0, k, n)
    counts = _brute_force_counts(pred.tolist(), lab.tolist())
    # The whole tail, not just the observed M: relabel predictions to hit every m0.
    for m0 in range(0, n + 1):
        exact = _brute_tail(counts, m0)
        # Build a labelling with the same class counts whose observed M is m0 (if one exists)
        # by scanning permutations; otherwise skip that m0.
        for perm in itertools.permutations(range(n)):
            lab_p = lab[list(perm)]
            if int(np.count_nonzero(pred == lab_p)) == m0:
                got = permutation_pvalue(pred, lab_p)
                assert got == pytest.approx(float(exact), rel=1e-12), (pred, lab_p, m0)
                break


@pytest.mark.parametrize(
    "pred,lab,tail",
    [
        # 4 distinct classes, all matched: only the identity, 1/24.
        ([0, 1, 2, 3], [0, 1, 2, 3], Fraction(1, 24)),
        # two classes of two: 2! * 2! = 4 of 24 perms keep all four.
        ([0, 0, 1, 1], [0, 0, 1, 1], Fraction(4, 24)),
        # n = 3 distinct, M = 1: perms with >= 1 fixed point = 6 - 2 derangements.
        ([0, 1, 2], [0, 2, 1], Fraction(4, 6)),
        # nothing matched: p = 1.
        ([1, 0], [0, 1], Fraction(1)),
        # n = 1 matched: p = 1 (the only permutation).
        ([5], [5], Fraction(1)),
    ],
)
def test_permutation_hand_cases(pred, lab, tail):
    assert permutation_pvalue(pred, lab) == pytest.approx(float(tail), rel=1e-13)


def test_permutation_full_distribution_n7():
    pred = [0, 0, 1, 1, 1, 2, 3]
    lab = [0, 1, 1, 2, 2, 2, 0]
    counts = _brute_force_counts(pred, lab)
    # The full null distribution of M, by enumeration of all 7! = 5040 permutations.
    assert counts == {0: 600, 1: 1464, 2: 1536, 3: 1008, 4: 360, 5: 72}
    m_obs = sum(p == q for p, q in zip(pred, lab, strict=True))
    assert m_obs == 3
    assert _brute_tail(counts, 3) == Fraction(2, 7)  # (1008 + 360 + 72) / 5040
    assert permutation_pvalue(pred, lab) == pytest.approx(2 / 7, rel=1e-13)


@pytest.mark.parametrize("n", [1, 5, 50, 1000])
def test_permutation_constant_labels_is_one(n):
    rng = np.random.default_rng(n)
    pred = rng.integers(0, 3, n)
    pred[0] = 7  # at least one match below
    lab = np.full(n, 7)
    assert permutation_log_pvalue(pred, lab) == 0.0
    assert permutation_pvalue(pred, lab) == 1.0


def test_permutation_tiny_pvalue_finite():
    # 200 distinct classes all matched: p = 1/200!, about 1e-375.
    x = np.arange(200)
    lp = permutation_log_pvalue(x, x)
    assert lp == pytest.approx(-math.lgamma(201), rel=1e-12)
    assert permutation_pvalue(x, x) == 0.0


def test_permutation_n1000_speed_and_value():
    # 10 balanced classes, all 1000 labels reproduced: p = prod(100!) / 1000!.
    # Measured ~0.2 s on one CPU core (Python 3.11); the bound leaves room for slow CI.
    x = np.repeat(np.arange(10), 100)
    t0 = time.perf_counter()
    lp = permutation_log_pvalue(x, x)
    elapsed = time.perf_counter() - t0
    assert lp == pytest.approx(10 * math.lgamma(101) - math.lgamma(1001), rel=1e-12)
    assert elapsed < 5.0


def test_permutation_too_large_points_to_mc():
    x = np.zeros(5001, dtype=np.int64)
    with pytest.raises(VerificationError, match="permutation_log_pvalue_mc"):
        permutation_log_pvalue(x, x)


@pytest.mark.parametrize(
    "pred,lab,match",
    [
        ([], [], "predicted must be non-empty"),
        ([[0, 1]], [[0, 1]], "predicted must be a 1-D array"),
        ([0.0, 1.0], [0, 1], "predicted must hold integer class labels"),
        ([True, False], [0, 1], "predicted must hold integer class labels"),
        ([0, 1], ["a", "b"], "labels must hold integer class labels"),
        ([0, 1, 2], [0, 1], "equal length"),
    ],
)
def test_permutation_rejects_bad_arrays(pred, lab, match):
    with pytest.raises(VerificationError, match=match):
        permutation_log_pvalue(pred, lab)
    with pytest.raises(VerificationError, match=match):
        permutation_log_pvalue_mc(pred, lab, rounds=10)


# ---------------------------------------------------------------------------------------------
# Monte-Carlo permutation test
# ---------------------------------------------------------------------------------------------


def test_mc_agrees_with_exact():
    rng = np.random.default_rng(3)
    n = 60
    lab = rng.integers(0, 4, n)
    pred = np.where(rng.random(n) < 0.15, lab, rng.integers(0, 4, n))
    exact = permutation_pvalue(pred, lab)
    assert 0.001 < exact < 0.5  # a moderate p-value, so the MC estimate is informative
    rounds = 40_000
    mc = math.exp(permutation_log_pvalue_mc(pred, lab, rounds=rounds, seed=1))
    se = math.sqrt(exact * (1 - exact) / rounds)
    assert abs(mc - exact) < 5 * se + 1 / rounds


def test_mc_is_seeded_and_bounded():
    x = np.arange(30) % 5
    a = permutation_log_pvalue_mc(x, x, rounds=1000, seed=4)
    assert a == permutation_log_pvalue_mc(x, x, rounds=1000, seed=4)
    # M = 30 is essentially never reached by chance: the estimator floors at 1/(B+1).
    assert a == pytest.approx(math.log(1 / 1001))
    assert permutation_log_pvalue_mc([0, 1], [1, 0], rounds=10) == 0.0


@pytest.mark.parametrize(
    "kwargs,match",
    [({"rounds": 0}, "rounds must be >= 1"), ({"rounds": 2.0}, "rounds"), ({"seed": -1}, "seed")],
)
def test_mc_rejects_bad_options(kwargs, match):
    with pytest.raises(VerificationError, match=match):
        permutation_log_pvalue_mc([0, 1], [0, 1], **kwargs)


# ---------------------------------------------------------------------------------------------
# Clopper-Pearson
# ---------------------------------------------------------------------------------------------

_CP_CASES = [
    (0, 1, 0.95),
    (1, 1, 0.95),
    (0, 10, 0.95),
    (10, 10, 0.95),
    (3, 10, 0.95),
    (5, 10, 0.99),
    (1, 2, 0.9),
    (0, 1000, 0.95),
    (1000, 1000, 0.95),
    (1, 1000, 0.95),
    (500, 1000, 0.95),
    (937, 1000, 0.999),
    (21, 100, 0.8),
]


@pytest.mark.parametrize("k,n,conf", _CP_CASES)
def test_clopper_pearson_matches_beta_ppf(k, n, conf):
    stats = pytest.importorskip("scipy.stats")
    a = (1 - conf) / 2
    lo_ref = 0.0 if k == 0 else stats.beta.ppf(a, k, n - k + 1)
    hi_ref = 1.0 if k == n else stats.beta.ppf(1 - a, k + 1, n - k)
    lo, hi = clopper_pearson(k, n, conf)
    assert lo == pytest.approx(lo_ref, abs=1e-11)
    assert hi == pytest.approx(hi_ref, abs=1e-11)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_clopper_pearson_closed_forms():
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(1 - 0.025**0.1, abs=1e-12))
    lo, hi = clopper_pearson(10, 10)
    assert (lo, hi) == (pytest.approx(0.025**0.1, abs=1e-12), 1.0)
    assert clopper_pearson(1, 1, 0.9) == (pytest.approx(0.05, abs=1e-12), 1.0)


@pytest.mark.parametrize(
    "args,match",
    [
        ((1, 0), "n must be >= 1"),
        ((3, 2), "k must be <= n"),
        ((-1, 2), "k must be >= 0"),
        ((1, 2, 1.0), "confidence must lie strictly between 0 and 1"),
        ((1, 2, 0.0), "confidence"),
        ((1, 2, float("nan")), "confidence"),
        ((1.5, 2), "k must be an int"),
    ],
)
def test_clopper_pearson_rejects_bad_arguments(args, match):
    with pytest.raises(VerificationError, match=match):
        clopper_pearson(*args)


# ---------------------------------------------------------------------------------------------
# Distribution-free null threshold
# ---------------------------------------------------------------------------------------------


def test_null_threshold_m59_is_just_sufficient():
    vals = np.linspace(0.0, 0.5, 59)
    t = null_threshold_bounded(vals)
    assert isinstance(t, NullThreshold)
    assert (t.order, t.m, t.sufficient) == (1, 59, True)
    assert t.threshold == 0.5
    assert t.fpr_bound == pytest.approx(1 - 0.05 ** (1 / 59), rel=1e-12)
    assert t.fpr_bound == pytest.approx(0.04950, abs=1e-5)


def test_null_threshold_m58_is_insufficient():
    t = null_threshold_bounded(np.linspace(0.0, 0.5, 58))
    assert (t.order, t.sufficient) == (1, False)
    assert t.fpr_bound == pytest.approx(0.0503, abs=1e-4)
    assert t.fpr_bound > 0.05


def test_null_threshold_m3_closed_form():
    t = null_threshold_bounded([0.1, 0.3, 0.2])
    assert t == NullThreshold(0.3, 1, 3, 0.05, 0.95, t.fpr_bound, False)
    assert t.fpr_bound == pytest.approx(1 - 0.05 ** (1 / 3), rel=1e-12)


def test_null_threshold_m1000_order_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    m = 1000
    vals = np.arange(m) / m  # distinct, so the j-th largest is (m - j) / m
    t = null_threshold_bounded(vals)
    j_ref = max(j for j in range(1, m + 1) if stats.binom.cdf(j - 1, m, 0.05) <= 0.05)
    assert j_ref == 39
    assert t.order == j_ref
    assert t.threshold == (m - j_ref) / m
    assert t.sufficient
    # fpr_bound solves P(Bin(m, x) <= j - 1) = 0.05; compare with the beta quantile.
    assert t.fpr_bound == pytest.approx(stats.beta.ppf(0.95, j_ref, m - j_ref + 1), abs=1e-10)
    assert stats.binom.cdf(j_ref - 1, m, t.fpr_bound) == pytest.approx(0.05, abs=1e-9)


def test_null_threshold_guarantee_by_simulation():
    # Uniform nulls: the realised FPR of threshold T is 1 - T. It must exceed fpr in at most
    # ~(1 - confidence) of trials (less: the discrete choice of j is conservative).
    rng = np.random.default_rng(0)
    trials, m = 2000, 100
    t0 = null_threshold_bounded(rng.random(m))
    assert t0.order == 2  # P(Bin(100, .05) <= 1) = 0.037 <= 0.05 < P(<= 2) = 0.118
    exceed = 0
    for _ in range(trials):
        t = null_threshold_bounded(rng.random(m))
        assert t.order == t0.order
        exceed += (1.0 - t.threshold) > 0.05
    rate = exceed / trials
    assert rate <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / trials)
    assert rate == pytest.approx(0.037, abs=0.015)  # the exact Beta(2, 99) tail at 0.05


@pytest.mark.parametrize(
    "vals,kwargs,match",
    [
        ([], {}, "null_retentions must be non-empty"),
        ([0.1, float("nan")], {}, "finite values in \\[0, 1\\]"),
        ([0.1, 1.5], {}, "finite values in \\[0, 1\\]"),
        ([[0.1]], {}, "1-D"),
        ([0.1], {"fpr": 0.0}, "fpr must lie strictly between 0 and 1"),
        ([0.1], {"confidence": 1.0}, "confidence"),
    ],
)
def test_null_threshold_rejects_bad_arguments(vals, kwargs, match):
    with pytest.raises(VerificationError, match=match):
        null_threshold_bounded(vals, **kwargs)


# ---------------------------------------------------------------------------------------------
# Holm
# ---------------------------------------------------------------------------------------------

_HOLM_CASES = [
    # p-values, alpha, rejected, adjusted (hand-computed: sorted p_(i) * (m - i + 1), running max)
    ([0.01, 0.04, 0.03], 0.05, [True, False, False], [0.03, 0.06, 0.06]),
    ([0.01, 0.02, 0.03], 0.05, [True, True, True], [0.03, 0.04, 0.04]),
    ([0.04], 0.05, [True], [0.04]),
    ([0.2, 0.001, 0.01, 0.9], 0.05, [False, True, True, False], [0.4, 0.004, 0.03, 0.9]),
    ([0.5, 0.6], 0.05, [False, False], [1.0, 1.0]),
    ([0.0, 0.0, 1.0], 0.01, [True, True, False], [0.0, 0.0, 1.0]),
    ([0.012, 0.013, 0.04, 0.2], 0.05, [True, True, False, False], [0.048, 0.048, 0.08, 0.2]),
]


@pytest.mark.parametrize("ps,alpha,rejected,adjusted", _HOLM_CASES)
def test_holm_table(ps, alpha, rejected, adjusted):
    assert holm(ps, alpha) == rejected
    adj = holm_adjusted(ps)
    assert adj == pytest.approx(adjusted, abs=1e-15)
    # the two functions agree: reject iff adjusted <= alpha
    assert [a <= alpha for a in adj] == rejected


@pytest.mark.parametrize(
    "ps,alpha,match",
    [
        ([], 0.05, "pvalues must be non-empty"),
        ([0.1, 1.1], 0.05, "pvalues must hold finite values"),
        ([0.1], 0.0, "alpha must lie strictly between 0 and 1"),
        ([0.1], 1.5, "alpha"),
    ],
)
def test_holm_rejects_bad_arguments(ps, alpha, match):
    with pytest.raises(VerificationError, match=match):
        holm(ps, alpha)


# ---------------------------------------------------------------------------------------------
# Package hygiene
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module",
    [stats, binomial, fisher, permutation, intervals, multiple, paired],
    ids=lambda m: m.__name__,
)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_package_exposes_every_public_name():
    # `from jaxwm import stats; stats.X` is the API: each module's public names are there.
    for module in (binomial, fisher, permutation, intervals, multiple, paired):
        for name, value in vars(module).items():
            if getattr(value, "__module__", None) == module.__name__ and not name.startswith("_"):
                assert getattr(stats, name) is value and name in stats.__all__, name
    assert stats.PERMUTATION_EXACT_MAX_N == permutation.PERMUTATION_EXACT_MAX_N


# ---------------------------------------------------------------------------------------------
# Paired small-sample statistics of the deciding study (jaxwm.stats.paired)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "q,df,want",
    # Student-t critical values as printed in standard tables (e.g. NIST/SEMATECH e-Handbook,
    # table 1.3.6.7.2), to the table's 3 decimals.
    [(0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 4, 2.776), (0.975, 8, 2.306),
     (0.975, 30, 2.042), (0.95, 5, 2.015), (0.995, 10, 3.169), (0.5, 3, 0.0)],
)  # fmt: skip
def test_t_quantile_matches_the_table(q, df, want):
    assert paired.t_quantile(q, df) == pytest.approx(want, abs=5e-4)
    assert paired.t_quantile(1 - q, df) == pytest.approx(-want, abs=5e-4)  # symmetry


@pytest.mark.parametrize(
    "values,mean,half,n",
    [
        # mean 2, s = 1, half width t(.975, 2) * 1 / sqrt(3) = 4.3027 / 1.7321 = 2.4841
        ([1.0, 2.0, 3.0], 2.0, 2.4841, 3),
        # n = 9 (3 seeds x 3 keys), mean 0.9, s^2 = 4 * 0.01 / 8 = 0.005, s = 0.070711:
        # half width t(.975, 8) * s / 3 = 2.3060 * 0.070711 / 3 = 0.054354
        ([0.8, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9, 1.0, 1.0], 0.9, 0.054354, 9),
        # all equal: zero width
        ([0.5, 0.5], 0.5, 0.0, 2),
    ],
)
def test_mean_interval_is_the_student_t_interval(values, mean, half, n):
    m = paired.mean_interval(values)
    assert m.n == n and m.mean == pytest.approx(mean)
    assert m.high - m.mean == pytest.approx(half, abs=1e-4)
    assert m.mean - m.low == pytest.approx(half, abs=1e-4)


def test_mean_interval_of_one_value_has_no_bounds_and_bad_input_is_refused():
    m = paired.mean_interval([0.7])
    assert m.mean == 0.7 and m.n == 1 and math.isnan(m.low) and math.isnan(m.high)
    for bad in ([], [float("nan")]):
        with pytest.raises(VerificationError, match="non-empty sequence of finite"):
            paired.mean_interval(bad)


@pytest.mark.parametrize(
    "diffs,w_plus,p,n",
    [
        # n = 5, all positive: W+ = 15, only 1 of 32 sign patterns as extreme per side: 2/32.
        ([1, 2, 3, 4, 5], 15, 2 / 32, 5),
        # ranks 1..5, negative has rank 1: W+ = 14; P(W+ >= 14) = 2/32, two-sided 4/32.
        ([0.5, 1.0, 1.5, 2.0, -0.2], 14, 4 / 32, 5),
        # n = 9 all positive: 2 / 512.
        ([0.1 * i for i in range(1, 10)], 45, 2 / 512, 9),
        # a zero is dropped; n = 4, W+ = 1+2 = 3 of 10: P(W+ <= 3) = #{sums<=3}/16 =
        # {}, {1}, {2}, {3}, {1,2} = 5/16 -> two-sided 10/16.
        ([0.0, 1.0, 2.0, -3.0, -4.0], 3, 10 / 16, 4),
        # ties: |d| = 1,1,2 -> mid-ranks 1.5,1.5,3; W+ = 1.5 + 3 = 4.5. Patterns (sums of the
        # positive ranks): 0, 1.5, 1.5, 3, 3, 4.5, 4.5, 6 -> P(W+ >= 4.5) = 3/8, two-sided 6/8.
        ([1.0, -1.0, 2.0], 4.5, 6 / 8, 3),
        # every difference zero: nothing to test.
        ([0.0, 0.0], 0, 1.0, 0),
    ],
)
def test_wilcoxon_signed_rank_exact_values(diffs, w_plus, p, n):
    r = paired.wilcoxon_signed_rank(diffs)
    assert r.statistic == pytest.approx(w_plus) and r.p_value == pytest.approx(p) and r.n == n


@pytest.mark.parametrize(
    "diffs,k,p",
    [
        ([1, 1, 1, 1, 1, 1, 1, 1, 1], 9, 2 / 512),  # 9 of 9 positive
        # 7 of 9 positive: P(K >= 7) = (36 + 9 + 1) / 512 = 46/512, two-sided 92/512
        ([1, 1, 1, 1, 1, 1, 1, -1, -1], 7, 92 / 512),
        ([1, -1], 1, 1.0),  # balanced
        ([0, 2, 0, 3, 4], 3, 2 / 8),  # zeros dropped: 3 of 3
    ],
)
def test_sign_test_exact_values(diffs, k, p):
    r = paired.sign_test(diffs)
    assert r.statistic == k and r.p_value == pytest.approx(p)


def test_paired_comparison_pairs_by_position():
    a, b = [0.90, 0.85, 0.95, 0.80], [0.88, 0.86, 0.90, 0.70]
    r = paired.paired_comparison(a, b)
    # differences 0.02, -0.01, 0.05, 0.10: mean 0.04; ranks 2, 1, 3, 4 -> W+ = 9 of 10.
    assert r["difference"].mean == pytest.approx(0.04) and r["difference"].n == 4
    assert (r["wins"], r["losses"]) == (3, 1)
    assert r["wilcoxon"].statistic == 9 and r["wilcoxon"].p_value == pytest.approx(4 / 16)
    # Swapping the methods mirrors the difference and keeps the p-value.
    s = paired.paired_comparison(b, a)
    assert s["difference"].mean == pytest.approx(-0.04)
    assert s["wilcoxon"].p_value == pytest.approx(r["wilcoxon"].p_value)
    with pytest.raises(VerificationError, match="equal lengths"):
        paired.paired_comparison([1.0, 2.0], [1.0])
