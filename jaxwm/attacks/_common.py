"""Small helpers shared by the attack modules (private)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax

from jaxwm.engine import partition

PyTree = Any
Predicate = Callable[[str, Any], bool]


def is_weight(path: str, leaf: Any) -> bool:
    """Default leaf selection: kernels (``ndim > 1``), not biases or normalisation parameters."""
    del path
    return getattr(leaf, "ndim", 0) > 1


def select(
    params: PyTree, patterns: Sequence[str] | None = None, predicate: Predicate | None = None
) -> PyTree:
    """Python-bool pytree like ``params``: which leaves an attack touches.

    Args:
      params: Parameter pytree.
      patterns: Path patterns (see :mod:`jaxwm.engine.partition`); wins over ``predicate``.
      predicate: ``predicate(path, leaf) -> bool``; default :func:`is_weight`.

    Returns:
      True for selected leaves.

    Example:
      >>> select(params, patterns=["head"])  # only head/kernel and head/bias
    """
    if patterns is not None:
        return partition.trainable_mask(params, list(patterns), log_table=False)
    predicate = predicate or is_weight
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    flags = [bool(predicate(partition.path_str(kp), leaf)) for kp, leaf in leaves]
    return jax.tree_util.tree_unflatten(treedef, flags)
