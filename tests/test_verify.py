"""Tests for jaxwm.verify: exact binomial p-values, null thresholds, verdicts, batching."""

from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pytest

from jaxwm import verify
from jaxwm.errors import VerificationError
from jaxwm.stats import binomial_log_pvalue, binomial_pvalue
from jaxwm.verify import (
    DEFAULT_ALPHA,
    Verdict,
    null_threshold,
    predict_labels,
    predictions,
    retention,
    sets,
    verdict,
    verify_predictions,
)

# (k, n, p): small and large n, both tails, tiny p-values, k = n, k = 0, extreme p.
_PVALUE_CASES = [
    (0, 10, 0.1),
    (1, 10, 0.1),
    (5, 10, 0.5),
    (10, 10, 0.1),
    (1, 1, 0.5),
    (3, 7, 0.3),
    (1, 3, 0.3),
    (9, 100, 0.1),
    (10, 100, 0.1),
    (11, 100, 0.1),
    (21, 100, 0.1),
    (86, 100, 0.1),
    (25, 100, 0.01),
    (100, 100, 0.01),  # 1e-200
    (17, 20, 0.05),
    (60, 1000, 0.1),
    (150, 1000, 0.1),
    (2, 100000, 0.5),
    (49500, 100000, 0.5),
    (50000, 100000, 0.5),
    (50001, 100000, 0.5),
    (50500, 100000, 0.5),
    (9500, 100000, 0.1),
    (10500, 100000, 0.1),
    (11000, 100000, 0.1),
    (30, 100000, 1e-4),
    (2, 100000, 1e-6),
    (1, 5, 1e-12),
    (99990, 100000, 0.9999),
    (100000, 100000, 0.9999),
    (1500, 100000, 0.01),
]


@pytest.mark.parametrize(("k", "n", "p"), _PVALUE_CASES)
def test_binomial_pvalue_matches_scipy(k, n, p):
    stats = pytest.importorskip("scipy.stats")
    expected = stats.binomtest(k, n, p, alternative="greater").pvalue
    assert expected > 0.0  # the table stays above float underflow
    assert binomial_pvalue(k, n, p) == pytest.approx(expected, rel=1e-9, abs=0.0)


def test_binomial_pvalue_edges():
    assert binomial_pvalue(0, 100, 0.1) == 1.0
    assert binomial_pvalue(-5, 100, 0.1) == 1.0
    assert binomial_pvalue(0, 0, 0.3) == 1.0
    assert binomial_pvalue(11, 10, 0.5) == 0.0
    assert binomial_pvalue(1, 10, 0.0) == 0.0
    assert binomial_pvalue(10, 10, 1.0) == 1.0
    assert binomial_pvalue(100, 100, 0.5) == pytest.approx(2.0**-100, rel=1e-12)
    # Log form stays finite where the p-value itself underflows.
    assert binomial_pvalue(2000, 2000, 0.1) == 0.0
    assert binomial_log_pvalue(2000, 2000, 0.1) == pytest.approx(2000 * math.log(0.1), rel=1e-12)
    for bad in [(1.5, 10, 0.1), (1, -1, 0.1), (1, 10, 1.5), (True, 10, 0.1)]:
        with pytest.raises(VerificationError):
            binomial_pvalue(*bad)


def test_binomial_pvalue_monotone_in_k():
    values = [binomial_pvalue(k, 200, 0.1) for k in range(0, 201)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_retention():
    assert retention(np.array([1, 2, 3, 0]), np.array([1, 2, 0, 0])) == 0.75
    assert retention([0, 0], [1, 1]) == 0.0
    with pytest.raises(VerificationError, match="shape"):
        retention(np.zeros(3, int), np.zeros(4, int))
    with pytest.raises(VerificationError, match="predicted"):
        retention(np.zeros((3, 10)), np.zeros(3, int))
    with pytest.raises(VerificationError, match="labels"):
        retention(np.zeros(3, int), np.zeros(3, float))
    with pytest.raises(VerificationError, match="empty"):
        retention(np.zeros(0, int), np.zeros(0, int))


@pytest.mark.parametrize(
    ("nulls", "order", "sufficient"),
    [
        # Orders checked with scipy: the largest j with binom.cdf(j - 1, m, 0.05) <= 0.05.
        ([0.1] * 58 + [0.2], 1, True),  # 59 models: the max bounds fpr 0.05 at 95%...
        ([0.1] * 57 + [0.2], 1, False),  # ...58 cannot
        (list(np.linspace(0.0, 0.99, 100)), 2, True),  # 100: the 2nd largest
        (list(np.linspace(0.0, 0.999, 1000)), 39, True),  # 1000: the 39th largest
        ([0.12, 0.08, 0.15], 1, False),
    ],
)
def test_null_threshold_table(nulls, order, sufficient):
    thr = null_threshold(nulls, 0.05, 0.95)
    assert thr.order == order and thr.m == len(nulls)
    assert thr.threshold == pytest.approx(sorted(nulls)[::-1][order - 1])
    assert thr.sufficient is sufficient is (thr.fpr_bound <= 0.05)


def test_null_threshold_bound_for_few_models_and_errors():
    thr = null_threshold([0.1, 0.2, 0.15], 0.05, 0.95)
    assert thr.threshold == 0.2 and thr.fpr_bound == pytest.approx(1 - 0.05 ** (1 / 3))
    assert null_threshold([0.1] * 59, 0.05, 0.95).sufficient
    for nulls, fpr, field in [
        ([], 0.05, "empty"),
        ([0.1], 0.0, "fpr"),
        ([0.1], 1.0, "fpr"),
        ([0.1, 1.5], 0.05, "null_retentions"),
        ([float("nan")], 0.05, "null_retentions"),
    ]:
        with pytest.raises(VerificationError, match=field):
            null_threshold(nulls, fpr)


def _preds(labels, agree, num_classes, seed=0):
    """Predictions agreeing with labels on the first `agree` entries only."""
    pred = labels.copy()
    pred[agree:] = (
        labels[agree:]
        + 1
        + np.random.default_rng(seed).integers(0, num_classes - 1, len(labels) - agree)
    ) % num_classes
    return pred


def test_verdict_owned_and_not_owned():
    labels = np.arange(100) % 10
    owned = verify_predictions(_preds(labels, 86, 10), labels, 10)
    assert isinstance(owned, Verdict)
    assert owned.owned and owned.k == 86 and owned.n == 100 and owned.retention == 0.86
    assert owned.chance == 0.1 and owned.alpha == DEFAULT_ALPHA and owned.threshold is None
    binom = next(t for t in owned.tests if t["name"] == "binomial")
    assert binom["decides"] and binom["p_value"] == pytest.approx(binomial_pvalue(86, 100, 0.1))
    # Without controls the binomial and the permutation test decide; p is the larger of the two.
    assert {t["name"] for t in owned.tests} == {"binomial", "permutation"}
    assert owned.p_value == pytest.approx(max(t["p_value"] for t in owned.tests))
    assert owned.confidence == 1.0 - owned.p_value
    assert owned.reason.startswith("owned") and "86/100" in owned.reason
    lo, hi = owned.retention_ci
    # scipy.stats.beta.ppf(0.025, 86, 15) and beta.ppf(0.975, 87, 14)
    assert (lo, hi) == pytest.approx((0.776272018629, 0.921294595073), abs=1e-9)

    chance = verify_predictions(_preds(labels, 12, 10), labels, 10)
    assert not chance.owned and chance.reason.startswith("not owned")
    assert chance.p_value > DEFAULT_ALPHA

    # Borderline: 21/100 passes alpha=1e-3, 20/100 does not (binomial), if permutation agrees.
    assert verify_predictions(_preds(labels, 21, 10), labels, 10).owned
    assert not verify_predictions(_preds(labels, 20, 10), labels, 10).owned

    # CIFAR-100-like: 25 % retention with K = 100 is overwhelming evidence.
    labels100 = np.arange(200) % 100
    assert verify_predictions(_preds(labels100, 50, 100), labels100, 100).owned


def test_control_test_vetoes_a_biased_suspect():
    # An innocent suspect that sends 76% of abstract images to class 1, and a claimant whose
    # target-label set asks for class 1: the binomial alone says p ~ 1e-55.
    rng = np.random.default_rng(0)
    labels = np.ones(100, np.int64)
    pred = np.where(rng.random(100) < 0.76, 1, rng.integers(0, 10, 100))
    c_pred = np.where(rng.random(400) < 0.76, 1, rng.integers(0, 10, 400))
    v = verify_predictions(pred, labels, 10, control_predicted=c_pred,
                           control_labels=np.ones(400, np.int64))  # fmt: skip
    binom = next(t for t in v.tests if t["name"] == "binomial")
    assert binom["p_value"] < 1e-40 and not binom["decides"]
    assert not v.owned and v.decided_by == "control" and v.control_rate > 0.7
    # No controls and one label: nothing accounts for bias, so no verdict at all.
    bare = verify_predictions(pred, labels, 10)
    assert not bare.owned and bare.decided_by == "none" and "bias" in bare.reason
    # A watermarked suspect: its keyed triggers match, the fresh-key controls do not.
    wm = verify_predictions(labels, labels, 10, control_predicted=c_pred * 0 + 3,
                            control_labels=np.ones(400, np.int64))  # fmt: skip
    assert wm.owned and wm.decided_by == "control" and wm.p_value < 1e-40
    with pytest.raises(VerificationError, match="at least as many"):
        verify_predictions(pred, labels, 10, control_predicted=c_pred[:50],
                           control_labels=np.ones(50, np.int64))  # fmt: skip


def test_predictions_outside_the_class_count_are_refused():
    labels = np.arange(20) % 4
    with pytest.raises(VerificationError, match="class count"):
        verify_predictions(labels + 4, labels, 4)


def test_null_threshold_vetoes():
    labels = np.arange(100) % 10
    pred = _preds(labels, 30, 10)
    assert verify_predictions(pred, labels, 10, null_retentions=[0.1] * 18 + [0.25]).owned
    veto = verify_predictions(pred, labels, 10, null_retentions=[0.1] * 17 + [0.3, 0.32, 0.4])
    assert veto.p_value < DEFAULT_ALPHA and not veto.owned and veto.decided_by == "null_models"
    assert veto.threshold == pytest.approx(0.4) and "threshold" in veto.reason
    # Equal to the threshold is not above it.
    tie = verify_predictions(pred, labels, 10, null_retentions=[0.1, 0.3])
    assert tie.threshold == pytest.approx(0.3) and not tie.owned
    assert tie.null_fpr_bound == pytest.approx(1 - 0.05**0.5)


def test_verdict_to_dict_and_validation():
    labels = np.arange(50) % 5
    d = verify_predictions(labels, labels, 5).to_dict()
    assert json.loads(json.dumps(d)) == d
    assert set(d) >= {"retention", "n", "k", "num_classes", "chance", "p_value", "alpha", "threshold",
                      "owned", "confidence", "reason", "tests", "decided_by", "retention_ci"}  # fmt: skip
    binom = next(t for t in d["tests"] if t["name"] == "binomial")
    assert binom["log10_p_value"] == pytest.approx(50 * math.log10(0.2))
    assert d["log10_p_value"] >= binom["log10_p_value"]
    with pytest.raises(VerificationError, match="num_classes"):
        verify_predictions(labels, labels, 1)
    with pytest.raises(VerificationError, match="labels"):
        verify_predictions(labels, labels, 4)
    with pytest.raises(VerificationError, match="alpha"):
        verify_predictions(labels, labels, 5, alpha=0.0)
    with pytest.raises(VerificationError, match="fpr"):
        verify_predictions(labels, labels, 5, null_retentions=[0.1], fpr=2.0)


def test_predict_labels_pads_and_compiles_once():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    traces = []

    @jax.jit
    def predict(x):
        traces.append(x.shape)  # runs only while tracing
        return jnp.stack([x[:, 0, 0, 0], -x[:, 0, 0, 0], jnp.zeros(x.shape[0])], axis=-1)

    images = np.zeros((10, 2, 2, 1), np.float32)
    images[:, 0, 0, 0] = [1, -1, 0.5, -2, 3, -1, 1, -1, 1, -1]
    expected = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    out = predict_labels(predict, images, batch_size=4)  # batches 4, 4, 2 (+2 padding)
    assert out.dtype == np.int32 and out.tolist() == expected.tolist()
    assert predict_labels(predict, images[:3], batch_size=4).tolist() == expected[:3].tolist()
    assert traces == [(4, 2, 2, 1)]


def test_predict_labels_plain_callable_and_errors():
    calls = []

    def predict(x):
        calls.append(len(x))
        return np.eye(3)[np.asarray(x).reshape(len(x), -1)[:, 0].astype(int) % 3]

    images = np.arange(7).reshape(7, 1, 1, 1)
    assert predict_labels(predict, images, batch_size=3).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert calls == [3, 3, 3]
    assert predict_labels(predict, images[:0]).shape == (0,)
    with pytest.raises(VerificationError, match="batch_size"):
        predict_labels(predict, images, batch_size=0)
    with pytest.raises(VerificationError, match="logits"):
        predict_labels(lambda x: np.zeros(len(x)), images, batch_size=3)


@pytest.mark.parametrize("module", [verify, verdict, sets, predictions], ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def _control_case(set_matches, n=10, sets_per_call=10, owner=7, clustered=True, alpha=1e-3):
    """A suspect whose answers match ``set_matches[i]`` of control set i's ``n`` labels.

    Each set's images carry its index, so the fake model knows which set it is looking at;
    returns the truncated and the full predictions, their labels, and how many calls were made.
    """
    set_images = [np.full((n, 1, 1, 1), i, np.int32) for i in range(len(set_matches))]
    set_labels = [np.full(n, 3, np.int32) for _ in set_matches]
    calls = []

    def labels_fn(x):
        calls.append(len(x))
        idx = x[:, 0, 0, 0]
        pos = np.tile(np.arange(n), len(x) // n)
        return np.where(pos < np.asarray(set_matches)[idx], 3, 4).astype(np.int32)

    got = predictions.predict_controls(
        labels_fn, set_images, set_labels, owner, alpha=alpha, clustered=clustered,
        sets_per_call=sets_per_call,
    )  # fmt: skip
    full = (labels_fn(np.concatenate(set_images)), np.concatenate(set_labels))
    return got, full, calls[:-1]


def _verdict(pred, lab, c_pred, c_lab, clustered=True, planned=None, alpha=1e-3):
    return verify_predictions(pred, lab, 10, alpha=alpha, control_predicted=c_pred,
                              control_labels=c_lab, control_clustered=clustered,
                              control_sets_planned=planned)  # fmt: skip


@pytest.mark.parametrize(
    "set_matches, calls, owned",
    [
        ([0] * 1000, [100] * 100, True),  # no control set reaches the owner's 7: all needed
        ([7] + [0] * 999, [100], False),  # the first set already ties: stop after one call
        ([0] * 25 + [9] + [0] * 974, [100] * 3, False),  # found in the third call
        ([0] * 999 + [8], [100] * 100, False),  # only the last set: every call made
    ],
)
def test_predict_controls_stops_only_when_the_rank_test_cannot_reject(set_matches, calls, owned):
    (c_pred, c_lab), (f_pred, f_lab), made = _control_case(set_matches)
    assert made == calls and len(c_pred) == sum(calls) and len(c_lab) == len(c_pred)
    assert np.array_equal(c_pred, f_pred[: len(c_pred)]) and np.array_equal(
        c_lab, f_lab[: len(c_lab)]
    )
    owner_pred, owner_lab = np.r_[np.full(7, 3), np.full(3, 4)], np.full(10, 3)
    truncated = _verdict(owner_pred, owner_lab, c_pred, c_lab, planned=len(set_matches))
    whole = _verdict(owner_pred, owner_lab, f_pred, f_lab)
    assert truncated.owned is whole.owned is owned
    if owned:  # nothing was left out: the same test
        assert truncated.p_value == whole.p_value == pytest.approx(1 / 1001)
    else:  # the prefix's rank test cannot reject either
        assert truncated.p_value >= 1e-3 and whole.p_value >= 1e-3


def test_predict_controls_gives_the_full_verdict_for_any_suspect():
    # Random per-set match counts around the owner's (7 of 10), many alphas and chunk sizes:
    # the verdict from the predicted prefix is always the verdict from every set.
    rng = np.random.default_rng(0)
    owner_pred, owner_lab = np.r_[np.full(7, 3), np.full(3, 4)], np.full(10, 3)
    for trial in range(60):
        b = int(rng.choice([20, 99, 200]))
        alpha = float(rng.choice([0.01, 0.05, 0.2]))
        rate = float(rng.choice([0.0, 0.002, 0.02, 0.3]))
        set_matches = np.where(rng.random(b) < rate, rng.integers(7, 11, b), rng.integers(0, 7, b))
        (c_pred, c_lab), (f_pred, f_lab), _ = _control_case(
            set_matches.tolist(), sets_per_call=int(rng.integers(1, 30)), alpha=alpha
        )
        truncated = _verdict(owner_pred, owner_lab, c_pred, c_lab, planned=b, alpha=alpha)
        whole = _verdict(owner_pred, owner_lab, f_pred, f_lab, alpha=alpha)
        assert truncated.owned is whole.owned, (trial, b, alpha, rate)
        if len(c_pred) < len(f_pred):  # stopped early: only ever when the verdict is negative
            assert not whole.owned and "stopped after" in truncated.tests[0]["detail"]


def test_predict_controls_predicts_pooled_controls_whole_and_checks_arguments():
    (c_pred, _), (f_pred, _), made = _control_case([10] * 4, clustered=False)
    assert made == [40] and np.array_equal(c_pred, f_pred)  # one call, every control
    fn = lambda x: np.zeros(len(x), np.int32)  # noqa: E731
    ims, labs = [np.zeros((2, 1, 1, 1))] * 3, [np.zeros(2, np.int32)] * 3
    with pytest.raises(VerificationError, match="as many label arrays"):
        predictions.predict_controls(fn, ims, labs[:2], 1, alpha=0.1, clustered=True)
    with pytest.raises(VerificationError, match="at least one"):
        predictions.predict_controls(fn, [], [], 1, alpha=0.1, clustered=True)
    with pytest.raises(VerificationError, match="sets_per_call"):
        predictions.predict_controls(fn, ims, labs, 1, alpha=0.1, clustered=True, sets_per_call=0)
    with pytest.raises(VerificationError, match="alpha"):
        predictions.predict_controls(fn, ims, labs, 1, alpha=1.0, clustered=True)
    with pytest.raises(VerificationError, match="one size"):
        predictions.predict_controls(fn, ims, [*labs[:2], np.zeros(3, np.int32)], 1, alpha=0.1,
                                     clustered=True)  # fmt: skip
    for bad in (1.0, -1, 3, True):  # a fraction, or not a count of a set of 2
        with pytest.raises(VerificationError, match="owner_matches"):
            predictions.predict_controls(fn, ims, labs, bad, alpha=0.1, clustered=True)
    with pytest.raises(VerificationError, match="one label per image"):
        predictions.predict_controls(lambda x: fn(x)[:-1], ims, labs, 1, alpha=0.1, clustered=True)


def test_a_shortened_control_test_can_only_say_not_owned():
    # 20 control sets of 10 predicted, none as good as the owner's 7: with all 1,000 planned
    # the rank test could still reject, so a verdict on this prefix is refused.
    owner_pred, owner_lab = np.r_[np.full(7, 3), np.full(3, 4)], np.full(10, 3)
    c_pred, c_lab = np.full(200, 4, np.int32), np.full(200, 3, np.int32)
    with pytest.raises(VerificationError, match="could still reject"):
        _verdict(owner_pred, owner_lab, c_pred, c_lab, planned=1000)
    for bad in (19, 2.5, True):
        with pytest.raises(VerificationError, match="control_sets_planned"):
            _verdict(owner_pred, owner_lab, c_pred, c_lab, planned=bad)
    # With one set at or above the owner's, the prefix is a valid "not owned".
    c_pred[:7] = 3
    v = _verdict(owner_pred, owner_lab, c_pred, c_lab, planned=1000)
    assert not v.owned and "stopped after 20 of 1000 sets" in v.tests[0]["detail"]
