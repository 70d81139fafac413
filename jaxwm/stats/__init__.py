"""Exact statistical tests for the ownership verifier: binomial, Fisher, permutation, bounds, Holm.

All tests are exact (no normal, Poisson or asymptotic approximation), one module each:

* :mod:`jaxwm.stats.binomial` -- how likely is an innocent model to reproduce ``k`` of ``n``
  trigger labels when each matches with chance ``p = 1/K``? The exact binomial upper tail.
* :mod:`jaxwm.stats.fisher` -- the one-sided Fisher exact test comparing two match rates
  (suspect on the owner's triggers vs. on fresh-key controls).
* :mod:`jaxwm.stats.permutation` -- the label-permutation test, which drops the ``1/K`` chance
  model (rook polynomials in exact integer arithmetic; Monte-Carlo for large ``n``).
* :mod:`jaxwm.stats.intervals` -- Clopper-Pearson intervals and the distribution-free
  retention threshold from null models (:func:`null_threshold_bounded`).
* :mod:`jaxwm.stats.multiple` -- Holm-Bonferroni over several tests.
* :mod:`jaxwm.stats.paired` -- Student-t intervals and the exact paired tests (Wilcoxon
  signed-rank, sign) that the deciding study uses to compare methods over seeds and keys.

Log p-values (natural logarithms) stay finite far below float underflow; the plain p-value
functions return ``exp`` of them. Pure Python, :mod:`math`, :mod:`decimal` and NumPy; invalid
arguments raise :class:`jaxwm.VerificationError` naming the argument. Every public name is
importable from this package (``from jaxwm import stats; stats.clopper_pearson(...)``).

Example:
    >>> f"{fisher_greater_pvalue(40, 50, 6, 50):.3g}"  # 40/50 reproduced vs 6/50 on controls
    '2.3e-12'
    >>> f"{binomial_pvalue(21, 100, 0.1):.3g}"  # 21/100 reproduced at chance 10 %
    '0.000808'
"""

from jaxwm.stats.binomial import binomial_log_pvalue, binomial_pvalue
from jaxwm.stats.fisher import fisher_greater_log_pvalue, fisher_greater_pvalue
from jaxwm.stats.intervals import NullThreshold, clopper_pearson, null_threshold_bounded
from jaxwm.stats.multiple import holm, holm_adjusted
from jaxwm.stats.paired import (
    MeanInterval,
    PairedTest,
    mean_interval,
    paired_comparison,
    sign_test,
    t_cdf,
    t_quantile,
    wilcoxon_signed_rank,
)
from jaxwm.stats.permutation import (
    PERMUTATION_EXACT_MAX_N,
    permutation_log_pvalue,
    permutation_log_pvalue_mc,
    permutation_pvalue,
)

__all__ = [
    "PERMUTATION_EXACT_MAX_N",
    "MeanInterval",
    "NullThreshold",
    "PairedTest",
    "binomial_log_pvalue",
    "binomial_pvalue",
    "clopper_pearson",
    "fisher_greater_log_pvalue",
    "fisher_greater_pvalue",
    "holm",
    "holm_adjusted",
    "mean_interval",
    "paired_comparison",
    "null_threshold_bounded",
    "permutation_log_pvalue",
    "permutation_log_pvalue_mc",
    "permutation_pvalue",
    "sign_test",
    "t_cdf",
    "t_quantile",
    "wilcoxon_signed_rank",
]
