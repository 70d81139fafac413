"""Exact statistical tests for the ownership verifier: binomial tail, Fisher, permutation, bounds.

:mod:`jaxwm.stats.binomial` is the exact binomial tail; :mod:`jaxwm.stats.permutation` holds the
other tests. Every public name is importable from this package.
"""

from jaxwm.stats.binomial import binomial_log_pvalue, binomial_pvalue
from jaxwm.stats.permutation import (
    PERMUTATION_EXACT_MAX_N,
    NullThreshold,
    clopper_pearson,
    fisher_greater_log_pvalue,
    fisher_greater_pvalue,
    holm,
    holm_adjusted,
    null_threshold_bounded,
    permutation_log_pvalue,
    permutation_log_pvalue_mc,
    permutation_pvalue,
)

__all__ = [
    "PERMUTATION_EXACT_MAX_N",
    "NullThreshold",
    "binomial_log_pvalue",
    "binomial_pvalue",
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
