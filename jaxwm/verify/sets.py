"""Several watermark sets tested on one suspect: Holm-correct their verdicts (family-wise error).

Each set's :class:`~jaxwm.verify.verdict.Verdict` carries its own p-value; testing several sets
gives several chances of a false positive, so :func:`decide_sets` Holm-adjusts those p-values
(:func:`jaxwm.stats.holm_adjusted`) and re-decides each set at the family-wise ``alpha``. The
suspect is owned when any set is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from jaxwm import stats
from jaxwm.errors import VerificationError
from jaxwm.verify.verdict import DEFAULT_ALPHA, Verdict


def decide_sets(
    verdicts: Sequence[Verdict], alpha: float = DEFAULT_ALPHA
) -> tuple[bool, list[Verdict], str]:
    """Holm-correct the verdicts of several sets tested on one suspect.

    Each set's p-value (its deciding tests' largest) is Holm-adjusted over the sets; a set is
    owned when its adjusted p-value is below ``alpha`` and its other conditions hold (null
    threshold, a bias-aware test). The suspect is owned when any set is.

    Args:
        verdicts: One :class:`Verdict` per set, each computed at ``alpha``.
        alpha: Family-wise significance level.

    Returns:
        ``(owned, verdicts with adjusted_p_value and owned updated, one-line summary)``.

    Example:
        >>> import numpy as np
        >>> from jaxwm.verify import verify_predictions
        >>> v = verify_predictions(np.arange(100) % 10, np.arange(100) % 10, 10)
        >>> decide_sets([v, v])[0]
        True
    """
    if not verdicts:
        raise VerificationError("decide_sets needs at least one verdict")
    adjusted = stats.holm_adjusted([v.p_value for v in verdicts])
    out = []
    for v, adj in zip(verdicts, adjusted, strict=True):
        others_ok = all(t["rejects"] for t in v.tests if t["decides"] and t["p_value"] is None)
        bias_aware = v.decided_by != "none"
        significant = adj < alpha
        owned = bool(bias_aware and others_ok and significant)
        reason = v.reason
        if len(verdicts) > 1:
            reason = (("owned" if owned else "not owned") + reason[reason.index(":"):]
                      + f"; Holm-adjusted over {len(verdicts)} sets p={adj:.2g}")  # fmt: skip
        out.append(dataclasses.replace(v, owned=owned, adjusted_p_value=adj, reason=reason))
    owned = any(v.owned for v in out)
    which = [i for i, v in enumerate(out) if v.owned]
    summary = (f"{'owned' if owned else 'not owned'}: {len(which)} of {len(out)} watermark "
               f"set(s) tested establish ownership at family-wise alpha={alpha:g} (Holm)")  # fmt: skip
    return owned, out, summary
