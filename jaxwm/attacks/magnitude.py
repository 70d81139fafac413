"""Unstructured magnitude pruning, and applying any pruning mask to parameters.

Magnitude pruning zeroes the globally smallest weights: the Watermark-Robustness-Toolbox's
"weight pruning" attack (Lukas et al. 2022). Masks are host-side numpy bool arrays, True = keep.

Example:
  >>> pruned = apply_mask(params, magnitude_mask(params, 0.5))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxwm.attacks._common import Predicate, select
from jaxwm.engine import compiled

PyTree = Any


def prune_count(ratio: float, total: int) -> int:
    """``floor(ratio * total)``, robust to float noise such as ``0.3 * 10 = 2.9999...``.

    Args:
      ratio: Fraction in [0, 1].
      total: Number of candidates.

    Returns:
      How many of ``total`` a pruning ``ratio`` removes.

    Example:
      >>> prune_count(0.3, 10)
      3
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    return min(int(math.floor(ratio * total + 1e-9)), total)


def magnitude_mask(
    params: PyTree,
    ratio: float,
    *,
    patterns: Sequence[str] | None = None,
    predicate: Predicate | None = None,
) -> PyTree:
    """Global unstructured magnitude pruning: drop the ``ratio`` smallest ``|w|``.

    Args:
      params: Parameter pytree.
      ratio: Fraction of the selected scalars to prune (``floor(ratio * count)`` of them).
      patterns: Path patterns of the leaves that compete (wins over ``predicate``).
      predicate: ``predicate(path, leaf) -> bool``; default: kernels (``ndim > 1``), i.e. the
        convolutions and the head, not biases or BatchNorm.

    Returns:
      Numpy bool pytree like ``params`` (True = keep); unselected leaves are all True. Ties
      are broken by leaf order, then flat index.

    Example:
      >>> pruned = apply_mask(params, magnitude_mask(params, 0.5))
    """
    sel = jax.tree.leaves(select(params, patterns, predicate))
    leaves, treedef = jax.tree.flatten(params)
    chosen = [
        np.abs(np.asarray(p, np.float32)).ravel() for p, s in zip(leaves, sel, strict=True) if s
    ]
    flat = np.concatenate(chosen) if chosen else np.zeros(0, np.float32)
    drop = np.zeros(flat.size, bool)
    drop[np.argsort(flat, kind="stable")[: prune_count(ratio, flat.size)]] = True
    masks, at = [], 0
    for p, s in zip(leaves, sel, strict=True):
        if s:
            masks.append(~drop[at : at + p.size].reshape(p.shape))
            at += p.size
        else:
            masks.append(np.ones(p.shape, bool))
    return jax.tree.unflatten(treedef, masks)


@compiled.cached
def _mask_program():
    """The whole tree in one jitted call (op by op, every leaf shape would compile apart)."""
    return jax.jit(lambda params, mask: jax.tree.map(
        lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, mask))  # fmt: skip


def apply_mask(params: PyTree, mask: PyTree) -> PyTree:
    """Zeroes ``params`` where ``mask`` is False (functional; kept entries are bit-identical).

    Args:
      params: Parameter pytree.
      mask: Bool pytree like ``params``.

    Returns:
      New parameters.

    Example:
      >>> apply_mask({"w": jnp.ones(2)}, {"w": np.array([True, False])})
      {'w': Array([1., 0.], dtype=float32)}
    """
    return _mask_program()(params, mask)
