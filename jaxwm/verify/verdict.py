"""One trigger set's ownership verdict: every test that applies, and the record of the decision.

:func:`verify_predictions` runs the tests described in :mod:`jaxwm.verify` (control, label
permutation, binomial, null models) on a suspect's predictions, keeps each as a
:class:`TestResult`, and decides: owned iff every deciding test rejects at ``alpha`` and at
least one of them accounts for the suspect's own bias (control or permutation). The verdict's
p-value is the largest of the deciding tests' (an intersection-union test). The
:class:`Verdict` is the JSON-serialisable record; :func:`jaxwm.verify.decide_sets`
Holm-corrects several of them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxwm import stats
from jaxwm.errors import VerificationError
from jaxwm.stats import NullThreshold, binomial_log_pvalue
from jaxwm.verify.predictions import check_predictions, rank_log10_pvalue

DEFAULT_ALPHA = 1e-3
DEFAULT_FPR = 0.05
DEFAULT_CONFIDENCE = 0.95
EXACT_PERMUTATION_MAX = 2000  # above this (about 2 s), a seeded Monte-Carlo permutation test
_LN10 = math.log(10.0)


def null_threshold(
    null_retentions: Sequence[float],
    fpr: float = DEFAULT_FPR,
    confidence: float = DEFAULT_CONFIDENCE,
) -> NullThreshold:
    """Threshold on retention from independently trained non-watermarked models.

    Ownership requires ``retention > threshold``. The threshold is the lowest order statistic
    of the null retentions whose false-positive rate is at most ``fpr`` with probability
    ``confidence`` (distribution-free); with fewer models than that needs (59 for 0.05 at 95%)
    it is their maximum, and ``fpr_bound`` says what that maximum guarantees.

    Args:
        null_retentions: Retentions in ``[0, 1]`` of null models on the trigger set.
        fpr: Target false-positive rate in ``(0, 1)``.
        confidence: Confidence of the bound in ``(0, 1)``.

    Returns:
        A :class:`NullThreshold` (threshold, order, fpr_bound, sufficient, ...).

    Example:
        >>> null_threshold([0.1, 0.12, 0.09]).threshold
        0.12
    """
    return stats.null_threshold_bounded(null_retentions, fpr, confidence)


@dataclasses.dataclass
class TestResult:
    """One statistical test of a verdict.

    Attributes:
        name: ``binomial``, ``control``, ``permutation`` or ``null_models``.
        decides: Whether the verdict needs it (otherwise only reported).
        rejects: Whether it found evidence against innocence at the verdict's level.
        p_value: Its p-value (``None`` for ``null_models``, a threshold rule).
        log10_p_value: ``log10(p_value)``, finite where the p-value underflows.
        detail: One line on what was compared.
    """

    name: str
    decides: bool
    rejects: bool
    p_value: float | None
    log10_p_value: float | None
    detail: str


@dataclasses.dataclass
class Verdict:
    """Outcome of an ownership check of one trigger set.

    Attributes:
        retention: Fraction of triggers whose label the suspect reproduced.
        n: Number of triggers.
        k: Number reproduced.
        num_classes: Classes ``K`` of the task.
        chance: Chance level of the binomial test (``1/K`` or ``1/(K-1)``).
        retention_ci: Clopper-Pearson 95% interval of the retention.
        p_value: Largest p-value of the deciding tests (may underflow to 0.0).
        log10_p_value: ``log10(p_value)``, finite even where ``p_value`` underflows.
        alpha: Significance level used.
        threshold: Null-model threshold, or ``None`` if no null models were given.
        owned: Whether ownership is established.
        confidence: ``1 - p_value``.
        reason: One human-readable line explaining the decision.
        decided_by: The test that decided: the failing one, or the weakest of those passed.
        tests: Every test computed (:class:`TestResult` as dicts).
        control_rate: The suspect's match rate on the control triggers, or ``None``.
        null_fpr_bound: The false-positive rate the null threshold guarantees, or ``None``.
        adjusted_p_value: Holm-adjusted p-value when several sets were tested together.
    """

    retention: float
    n: int
    k: int
    num_classes: int
    chance: float
    retention_ci: list[float]
    p_value: float
    log10_p_value: float
    alpha: float
    threshold: float | None
    owned: bool
    confidence: float
    reason: str
    decided_by: str
    tests: list[dict[str, Any]]
    control_rate: float | None = None
    null_fpr_bound: float | None = None
    adjusted_p_value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of all fields.

        Example:
            >>> verify_predictions(np.array([1, 1]), np.array([1, 1]), 2).to_dict()["k"]
            2
        """
        return dataclasses.asdict(self)


def _fmt_p(log10_p: float) -> str:
    return f"{10**log10_p:.2g}" if log10_p > -300 else f"1e{log10_p:.0f}"


def verify_predictions(
    predicted: Any,
    labels: Any,
    num_classes: int,
    *,
    alpha: float = DEFAULT_ALPHA,
    chance: float | None = None,
    control_predicted: Any = None,
    control_labels: Any = None,
    control_clustered: bool = False,
    control_sets_planned: int | None = None,
    null_retentions: Sequence[float] | None = None,
    fpr: float = DEFAULT_FPR,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Verdict:
    """Decide ownership from a suspect model's predictions on the trigger set (and controls).

    Owned iff every deciding test rejects at ``alpha`` (module docstring): the control test
    when controls are given, the permutation test when the labels vary, the binomial test when
    there are no controls, and ``retention > threshold`` when null retentions are given; and at
    least one of the control and permutation tests applies (a target-label set without controls
    is never owned: nothing then separates a watermark from a suspect's bias). The default
    ``alpha = 1e-3`` is strict because a false accusation is the costly error.

    Args:
        predicted: Suspect's integer predictions ``(N,)`` on the trigger images.
        labels: Owner's trigger labels ``(N,)`` in ``[0, num_classes)``.
        num_classes: ``K >= 2``.
        alpha: Significance level in ``(0, 1)``.
        chance: Per-trigger chance of the binomial test; default ``1/K``
            (:func:`jaxwm.triggers.chance_level` gives the right one for a set).
        control_predicted: Suspect's predictions on control triggers (``jaxwm.controls``), at
            least ``N`` of them, or ``None``.
        control_labels: The controls' labels.
        control_clustered: Whether the triggers of one key share a random component
            (``jaxwm.controls.clustered(kind)``, true for ``content``: one stamp per key). The
            controls are then whole sets of ``N`` and the control test ranks the owner's set
            among them instead of pooling images (Fisher's test would be anti-conservative).
        control_sets_planned: How many control sets were drawn, when
            :func:`jaxwm.verify.predict_controls` predicted only the first of them (it stops
            once the rank test cannot reject); the detail then says so. The test is made on the
            sets given, so its p-value is at least as large as on all of them.
        null_retentions: Retentions of independent non-watermarked models, or ``None``.
        fpr: False-positive rate for the null threshold.
        confidence: Confidence of the null threshold's bound and of ``retention_ci``.

    Returns:
        The :class:`Verdict`.

    Example:
        >>> v = verify_predictions(np.arange(100) % 10, np.arange(100) % 10, 10)
        >>> v.owned, v.retention
        (True, 1.0)
    """
    pred, lab = check_predictions(predicted, labels)
    k_cls = num_classes
    if isinstance(k_cls, bool) or not isinstance(k_cls, int | np.integer) or k_cls < 2:
        raise VerificationError(f"num_classes must be an int >= 2; got {num_classes!r}")
    if lab.min() < 0 or lab.max() >= k_cls:
        raise VerificationError(f"labels must lie in [0, {k_cls}) (num_classes)")
    if pred.min() < 0 or pred.max() >= k_cls:
        raise VerificationError(
            f"predicted labels must lie in [0, {k_cls}): the suspect answers with another class "
            "count than the watermark set's num_classes"
        )
    if not 0.0 < alpha < 1.0:
        raise VerificationError(f"alpha must lie in (0, 1); got {alpha}")
    if not 0.0 < fpr < 1.0:
        raise VerificationError(f"fpr must lie in (0, 1); got {fpr}")
    chance = 1.0 / k_cls if chance is None else float(chance)
    if not 0.0 < chance <= 1.0:
        raise VerificationError(f"chance must lie in (0, 1]; got {chance}")
    n, k = int(lab.size), int(np.sum(pred == lab))
    ret = k / n
    lo, hi = stats.clopper_pearson(k, n, confidence)
    tests: list[TestResult] = []

    controlled = control_predicted is not None or control_labels is not None
    control_rate = None
    if controlled:
        c_pred, c_lab = check_predictions(control_predicted, control_labels)
        if c_lab.size < n:
            raise VerificationError(
                f"the control test needs at least as many control triggers as owner triggers "
                f"({n}); got {c_lab.size}"
            )
        kc, m = int(np.sum(c_pred == c_lab)), int(c_lab.size)
        control_rate = kc / m
        if control_clustered:
            # Triggers of one key share a random component (content: one stamp), so matches
            # cluster by key and the key is the unit: rank the owner's set among the control
            # sets (exact under exchangeable keys; p >= 1/(B+1)).
            if m % n:
                raise VerificationError(
                    f"clustered controls must be whole sets of {n} triggers; got {m} controls"
                )
            per_set = (c_pred == c_lab).reshape(m // n, n).sum(axis=1)
            at_least = int(np.sum(per_set >= k))
            lp = rank_log10_pvalue(at_least, len(per_set))
            detail = (f"{k}/{n} on the owner's set vs {len(per_set)} fresh-key sets "
                      f"(mean {control_rate:.1%}; {at_least} at or above; a rank test, "
                      f"p >= 1/{len(per_set) + 1})")  # fmt: skip
            if control_sets_planned is not None:
                planned = control_sets_planned
                if (
                    isinstance(planned, bool)
                    or not isinstance(planned, int | np.integer)
                    or (planned < len(per_set))
                ):
                    raise VerificationError(
                        f"control_sets_planned must be an int >= the {len(per_set)} control "
                        f"sets given; got {planned!r}"
                    )
                if planned > len(per_set):
                    # A shortened test may only ever say "not owned": it must already be unable
                    # to reject with all the planned sets (predict_controls stops only then).
                    if rank_log10_pvalue(at_least, planned) < math.log10(alpha):
                        raise VerificationError(
                            f"only {len(per_set)} of {planned} control sets were predicted, yet "
                            "the rank test could still reject; predict all of them"
                        )
                    detail += (f"; stopped after {len(per_set)} of {planned} sets, "
                               "once the rank test could no longer reject")  # fmt: skip
        else:
            lp = stats.fisher_greater_log_pvalue(k, n, kc, m) / _LN10
            detail = f"{k}/{n} on the owner's triggers vs {kc}/{m} ({control_rate:.1%}) on fresh-key controls"
        tests.append(TestResult("control", True, lp < math.log10(alpha), 10**lp, lp, detail))

    if np.unique(lab).size >= 2:
        if n <= EXACT_PERMUTATION_MAX:
            lp = stats.permutation_log_pvalue(pred, lab) / _LN10
            how = "exact"
        else:
            lp = stats.permutation_log_pvalue_mc(pred, lab) / _LN10
            how = "Monte-Carlo, 100,000 rounds"
        tests.append(TestResult("permutation", True, lp < math.log10(alpha), 10**lp, lp,
                                f"{k} matches vs relabelling by permutation ({how})"))  # fmt: skip

    lp = binomial_log_pvalue(k, n, chance) / _LN10
    tests.append(TestResult("binomial", not controlled, lp < math.log10(alpha), 10**lp, lp,
                            f"{k}/{n} vs chance {chance:.3g} per trigger"))  # fmt: skip

    threshold = fpr_bound = None
    if null_retentions is not None:
        nt = null_threshold(null_retentions, fpr, confidence)
        threshold, fpr_bound = nt.threshold, nt.fpr_bound
        bound = (f"fpr <= {nt.fpr_bound:.3g} at {confidence:.0%} confidence"
                 + ("" if nt.sufficient else f", not the {fpr:g} asked: too few models"))  # fmt: skip
        tests.append(TestResult("null_models", True, ret > nt.threshold, None, None,
                                f"retention {ret:.1%} vs threshold {nt.threshold:.1%} from "
                                f"{nt.m} independent models ({bound})"))  # fmt: skip

    deciding = [t for t in tests if t.decides]
    p_tests = [t for t in deciding if t.p_value is not None]
    worst = max(p_tests, key=lambda t: t.log10_p_value)
    log10_p = worst.log10_p_value
    bias_aware = any(t.name in ("control", "permutation") for t in tests)
    failing = [t for t in deciding if not t.rejects]
    owned = bias_aware and not failing
    summary = (f"{k}/{n} trigger labels reproduced ({ret:.1%}, {confidence:.0%} CI "
               f"{lo:.1%}-{hi:.1%})")  # fmt: skip
    p_list = "; ".join(
        f"{t.name} p={_fmt_p(t.log10_p_value)}" + ("" if t.decides else " (reported)")
        for t in tests if t.p_value is not None
    )  # fmt: skip
    if not bias_aware:
        decided_by = "none"
        reason = (f"not owned: {summary}, but no test accounts for the suspect's own bias "
                  "(one label for every trigger and no control triggers)")  # fmt: skip
    elif failing:
        fail = max(failing, key=lambda t: -math.inf if t.p_value is None else t.log10_p_value)
        fail = next((t for t in failing if t.name == "null_models"), fail)
        decided_by = fail.name
        why = (
            fail.detail
            if fail.p_value is None
            else f"{fail.name} test not significant ({fail.detail})"
        )
        reason = f"not owned: {summary}; {why}; alpha={alpha:g}; {p_list}"
    else:
        decided_by = worst.name
        reason = f"owned: {summary}; every test rejects at alpha={alpha:g}: {p_list}"
        if threshold is not None:
            reason += f"; above the null threshold {threshold:.1%}"
    return Verdict(
        retention=ret, n=n, k=k, num_classes=int(k_cls), chance=chance, retention_ci=[lo, hi],
        p_value=10**log10_p, log10_p_value=log10_p, alpha=float(alpha), threshold=threshold,
        owned=bool(owned), confidence=1.0 - 10**log10_p, reason=reason, decided_by=decided_by,
        tests=[dataclasses.asdict(t) for t in tests], control_rate=control_rate,
        null_fpr_bound=fpr_bound,
    )  # fmt: skip
