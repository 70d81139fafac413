"""Multiple testing: Holm-Bonferroni over several hypotheses on one suspect.

:mod:`jaxwm.verify` tests each watermark set with its own p-value; testing several sets on one
suspect gives several chances to find a false positive, so the sets are Holm-corrected.
:func:`holm` rejects step-down at a family-wise level; :func:`holm_adjusted` gives the adjusted
p-values (hypothesis ``i`` is rejected at ``alpha`` iff ``adj[i] <= alpha``). Both control the
probability of any false rejection under arbitrary dependence between the tests.

Example:
    >>> holm([0.001, 0.2], alpha=0.01), [round(p, 6) for p in holm_adjusted([0.001, 0.2])]
    ([True, False], [0.002, 0.2])
"""

from __future__ import annotations

from collections.abc import Sequence

from jaxwm.stats._checks import check_open_unit, check_unit_floats


def _check_pvalues(pvalues: Sequence[float]) -> list[float]:
    return check_unit_floats("pvalues", pvalues).tolist()


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
    alpha = check_open_unit("alpha", alpha)
    m = len(ps)
    rejected = [False] * m
    for rank, i in enumerate(sorted(range(m), key=lambda i: ps[i])):
        if ps[i] > alpha / (m - rank):
            break
        rejected[i] = True
    return rejected
