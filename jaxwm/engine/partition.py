"""Selecting parameter subtrees by path pattern, and freezing them.

Every algorithm in jaxwm that treats layers differently (partitioned embedding, fine-tuning the
last layers, re-training the head) names those layers by regular expressions over parameter
paths, never by hard-coded names, so it works for any network.

Rules (in the spirit of big_vision's ``make_mask_trees``):

* A path is the ``/``-joined dict keys of a leaf: ``layer4/block1/conv2/kernel``.
* A pattern *selects a subtree*: it matches a leaf when it fully matches the leaf's path or one of
  its ancestors' paths. ``layer4`` selects everything under ``layer4``; ``layer4/.*/bn.*`` selects
  the BatchNorm parameters of ``layer4``; ``head/kernel`` one leaf.
* Rules are ``(pattern, label)`` pairs; the first rule that matches a leaf labels it.
* Every leaf must be labelled, and every pattern must match at least one leaf: a typo in a
  config fails loudly instead of silently freezing (or training) the wrong thing.

Example:
  >>> params = {"stem": {"w": jnp.ones(2)}, "head": {"w": jnp.ones(3)}}
  >>> labels = match_labels(params, [("head", "train"), (".*", "freeze")])
  >>> labels
  {'head': {'w': 'train'}, 'stem': {'w': 'freeze'}}
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxwm.errors import PatternError

PyTree = Any
log = logging.getLogger(__name__)

TRAIN, FREEZE = "train", "freeze"


def path_str(key_path: Sequence[Any]) -> str:
    """``/``-joined path of a ``jax.tree_util`` key path (dict keys, sequence indices, fields)."""
    parts = []
    for k in key_path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def tree_paths(tree: PyTree) -> list[str]:
    """The path of every leaf of ``tree``, in ``jax.tree.leaves`` order."""
    return [path_str(kp) for kp, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _ancestors(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def match_labels(
    tree: PyTree,
    rules: Sequence[tuple[str, str]],
    *,
    log_table: bool = True,
) -> PyTree:
    """Labels every leaf of ``tree`` with the label of the first rule whose pattern selects it.

    Args:
      tree: Parameter pytree (nested dicts).
      rules: ``(regex, label)`` pairs, tried in order; see the module docstring for matching.
      log_table: Log the table of rule -> number of leaves and scalars matched.

    Returns:
      A pytree like ``tree`` whose leaves are label strings (ready for ``optax.partition``).

    Raises:
      PatternError: a pattern does not compile or matches no leaf, or a leaf matches no rule.
    """
    compiled = []
    for pattern, label in rules:
        try:
            compiled.append((re.compile(pattern), label))
        except re.error as e:
            raise PatternError(f"invalid path pattern {pattern!r}: {e}") from e
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    labels, hits, sizes, uncovered = [], [0] * len(rules), [0] * len(rules), []
    for kp, leaf in leaves:
        path = path_str(kp)
        candidates = _ancestors(path)
        for i, (rx, label) in enumerate(compiled):
            if any(rx.fullmatch(c) for c in candidates):
                labels.append(label)
                hits[i] += 1
                sizes[i] += int(getattr(leaf, "size", 1))
                break
        else:
            uncovered.append(path)
            labels.append(None)
    if uncovered:
        raise PatternError(
            f"{len(uncovered)} parameter(s) match no pattern, e.g. {uncovered[:5]}; "
            f"patterns were {[p for p, _ in rules]}. Add a catch-all rule such as '.*'."
        )
    unused = [rules[i][0] for i, n in enumerate(hits) if n == 0]
    if unused:
        raise PatternError(
            f"pattern(s) {unused} match no parameter. Known top-level paths: "
            f"{sorted({p.split('/')[0] for p in tree_paths(tree)})}"
        )
    if log_table:
        log.info("parameter selection:\n%s", format_table(rules, hits, sizes))
    return jax.tree_util.tree_unflatten(treedef, labels)


def format_table(
    rules: Sequence[tuple[str, str]], hits: Sequence[int], sizes: Sequence[int]
) -> str:
    """Plain-text table of pattern, label, leaves and scalars matched."""
    w = max([len("pattern")] + [len(p) for p, _ in rules])
    lines = [f"{'pattern':<{w}}  {'label':<8} {'leaves':>6} {'params':>11}"]
    for (p, label), n, s in zip(rules, hits, sizes, strict=True):
        lines.append(f"{p:<{w}}  {label:<8} {n:>6} {s:>11,}")
    return "\n".join(lines)


def trainable_mask(params: PyTree, patterns: Sequence[str], *, log_table: bool = True) -> PyTree:
    """Boolean pytree: True for leaves selected by any of ``patterns``, False elsewhere.

    Example:
      >>> mask = trainable_mask(params, ["layer4", "head"])
    """
    rules = [(p, TRAIN) for p in patterns] + [(".*", FREEZE)]
    labels = match_labels(params, rules, log_table=log_table)
    return jax.tree.map(lambda lab: lab == TRAIN, labels)


def masked(tx: optax.GradientTransformation, mask: PyTree) -> optax.GradientTransformation:
    """Wraps ``tx`` so that leaves where ``mask`` is False get exactly zero update.

    Uses ``optax.partition`` (formerly ``multi_transform``): frozen leaves go through
    ``optax.set_to_zero`` and hold no optimizer state, so weight decay inside ``tx`` cannot
    touch them either.

    The labels go to optax as a function returning them, never as the pytree itself: optax
    treats a callable ``param_labels`` as that function, and a callable pytree (an Equinox
    module, whose class defines ``__call__``) would otherwise be called on the parameters.
    """
    labels = jax.tree.map(lambda m: TRAIN if m else FREEZE, mask)
    return optax.partition({TRAIN: tx, FREEZE: optax.set_to_zero()}, lambda _: labels)


def frozen_modules(mask: PyTree) -> tuple[str, ...]:
    """Module paths (leaf path minus its last key) all of whose leaves are frozen.

    This is the ``frozen`` hint of the model apply contract (see :mod:`jaxwm.models`).
    """
    by_module: dict[str, bool] = {}
    for kp, m in jax.tree_util.tree_flatten_with_path(mask)[0]:
        module = path_str(kp).rpartition("/")[0]
        by_module[module] = by_module.get(module, True) and not bool(m)
    return tuple(sorted(p for p, frozen in by_module.items() if frozen and p))


def split(params: PyTree, mask: PyTree) -> tuple[PyTree, PyTree]:
    """Splits ``params`` into (trainable, frozen) trees; the missing leaves are ``None``.

    Differentiating only the trainable half means XLA never computes the frozen leaves'
    gradients (and, for a frozen prefix of the network, skips its backward pass entirely).
    """
    trainable = jax.tree.map(lambda m, p: p if m else None, mask, params)
    frozen = jax.tree.map(lambda m, p: None if m else p, mask, params)
    return trainable, frozen


def merge(trainable: PyTree, frozen: PyTree, mask: PyTree) -> PyTree:
    """Inverse of :func:`split`."""
    return jax.tree.map(
        lambda m, t, f: t if m else f, mask, trainable, frozen, is_leaf=lambda x: x is None
    )


def fill_frozen(grads: PyTree, params: PyTree, mask: PyTree) -> PyTree:
    """Full-structure gradients: the trainable ones, and zeros (constants) for frozen leaves."""
    return jax.tree.map(
        lambda m, g, p: g if m else jnp.zeros_like(p),
        mask,
        grads,
        params,
        is_leaf=lambda x: x is None,
    )


def state_mask(state: PyTree, frozen: Sequence[str]) -> PyTree:
    """True for state leaves (e.g. BatchNorm statistics) that live under a frozen module."""

    def under(path: str) -> bool:
        module = path.rpartition("/")[0]
        return any(f == "" or module == f or module.startswith(f + "/") for f in frozen)

    leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
    return jax.tree_util.tree_unflatten(treedef, [under(path_str(kp)) for kp, _ in leaves])


def mask_key(mask: PyTree | None) -> tuple | None:
    """A hashable stand-in for a boolean mask (its tree structure and bits), for caches.

    Compiled steps are cached per mask: two masks with equal keys compile to the same program.
    :func:`mask_from_key` inverts it. None stays None (no mask: everything trainable).
    """
    if mask is None:
        return None
    leaves, treedef = jax.tree.flatten(mask)
    return treedef, tuple(bool(m) for m in leaves)


def mask_from_key(key: tuple | None) -> PyTree | None:
    """The mask that :func:`mask_key` made ``key`` from."""
    if key is None:
        return None
    treedef, bits = key
    return jax.tree.unflatten(treedef, list(bits))
