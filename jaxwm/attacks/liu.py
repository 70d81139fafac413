"""Fine-pruning as Liu et al. 2018 describe it ("Fine-Pruning", RAID): a stopping rule, one layer.

Liu et al. prune the *last convolutional layer* only, removing its channels in increasing order
of *mean activation* on clean data, and stop when clean accuracy has dropped by about 4 points;
then they fine-tune. jaxwm's :func:`~jaxwm.attacks.prune.fine_prune` (the ``fine_prune`` attack
kind) instead ranks by activation *frequency* over every block at fixed ratios.

This module follows Liu et al. with these departures, stated so results can be read right:

* The clean accuracy that stops pruning is measured on the attacker's own data (Liu et al. use
  a held-out validation set of the defender; jaxwm's attacker has only its share).
* The threshold is a parameter (``max_drop``, Liu et al. state 4%), and the last channel count
  whose drop stays within it is kept (Liu et al. stop at the first count that exceeds it).
* The layer is any unit of the model's table; for a residual network there is no single "last
  convolutional layer" whose channels feed the classifier alone, so the default
  (the last block-internal unit, a convolution output that nothing else adds to) is a choice.
* At least ``min_keep`` channels stay (an empty layer disconnects a plain network).

Example:
  >>> p, s, info = liu_fine_prune(model.apply, model.activations, model.prunable, params, state,
  ...                             x, y, layer="layer2/block0", max_drop=0.04, mean=m, std=sd,
  ...                             key=jax.random.key(0), epochs=2, lr=0.01)
  >>> info["pruned"], info["accuracies"][:3]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jaxwm.attacks.finetune import finetune
from jaxwm.attacks.magnitude import apply_mask
from jaxwm.attacks.prune import (
    ActivationsFn,
    Prunable,
    channel_masks_to_param_mask,
    mean_activation,
)
from jaxwm.engine import train
from jaxwm.engine.epochs import ApplyFn
from jaxwm.errors import ConfigError

PyTree = Any


def default_layer(prunable: Prunable) -> str:
    """The last unit of a prunable table: the last block-internal convolution output.

    Args:
      prunable: A channel -> parameter table (insertion order = network order).

    Returns:
      Its last name.
    """
    if not prunable:
        raise ConfigError("the model has no prunable units for liu_fine_prune")
    return list(prunable)[-1]


def liu_prune(
    apply_fn: ApplyFn,
    activations_fn: ActivationsFn,
    prunable: Prunable,
    params: PyTree,
    state: PyTree,
    images: Any,
    labels: Any,
    *,
    layer: str,
    max_drop: float,
    mean: Sequence[float],
    std: Sequence[float],
    min_keep: int = 1,
) -> tuple[PyTree, PyTree, dict[str, Any]]:
    """Liu et al.'s pruning: one layer, least mean activation first, until accuracy drops.

    Channels of ``layer`` are ranked once by mean activation on ``images`` (ties: lower index
    first); the ``n`` least active are pruned for ``n = 1, 2, ...`` and clean accuracy on
    ``(images, labels)`` is measured each time. Pruning stops at the first ``n`` whose accuracy
    is more than ``max_drop`` below the unpruned model's; the result keeps ``n - 1`` pruned
    (the largest count within the threshold), or ``C - min_keep`` if none exceeds it.

    Args:
      apply_fn: Model apply.
      activations_fn: Returns ``layer`` among its activations (the model's ``activations``,
        or ``units`` for stream / penultimate units).
      prunable: The table that maps ``layer`` to parameter slices.
      params, state: The stolen model.
      images, labels: The attacker's clean data (uint8 NHWC, int32).
      layer: The unit to prune (see :func:`default_layer`).
      max_drop: Largest tolerated accuracy drop, as a fraction (Liu et al.: 0.04).
      mean, std: Per-channel normalisation.
      min_keep: Channels that always stay.

    Returns:
      ``(pruned params, param mask, info)``; ``info`` has ``layer``, ``channels``, ``pruned``
      (the count kept pruned), ``base_accuracy`` and ``accuracies`` (accuracy after pruning
      ``1, 2, ...`` channels, up to the first one over the threshold).

    Example:
      >>> p, mask, info = liu_prune(model.apply, model.activations, model.prunable, params,
      ...                           state, x, y, layer="layer2/block0", max_drop=0.04,
      ...                           mean=m, std=sd)
    """
    if layer not in prunable:
        raise ConfigError(
            f"attack.liu_layer={layer!r} is not a prunable unit; known: {sorted(prunable)}"
        )
    if max_drop < 0:
        raise ConfigError(f"attack.liu_max_drop must be >= 0, got {max_drop}")
    acts = mean_activation(activations_fn, params, state, images, mean=mean, std=std)
    order = np.argsort(np.asarray(acts[layer], np.float64), kind="stable")
    channels = len(order)
    evaluate = train.make_eval(apply_fn, mean, std)
    x, y = np.asarray(images, np.uint8), np.asarray(labels, np.int32)
    base = float(evaluate(params, state, x, y))

    def masked(n: int) -> PyTree:
        keep = np.ones(channels, bool)
        keep[order[:n]] = False
        return channel_masks_to_param_mask({layer: keep}, prunable, params)

    pruned, accuracies = 0, []
    for n in range(1, max(channels - min_keep, 0) + 1):
        acc = float(evaluate(apply_mask(params, masked(n)), state, x, y))
        accuracies.append(acc)
        if base - acc > max_drop + 1e-9:  # 1e-9: a drop of exactly max_drop is within it
            break
        pruned = n
    mask = masked(pruned)
    info = {"layer": layer, "channels": channels, "pruned": pruned, "base_accuracy": base,
            "accuracies": accuracies}  # fmt: skip
    return apply_mask(params, mask), mask, info


def liu_fine_prune(
    apply_fn: ApplyFn,
    activations_fn: ActivationsFn,
    prunable: Prunable,
    params: PyTree,
    state: PyTree,
    images: Any,
    labels: Any,
    *,
    layer: str,
    max_drop: float,
    mean: Sequence[float],
    std: Sequence[float],
    key: jax.Array,
    epochs: int,
    lr: float,
    min_keep: int = 1,
    **finetune_kwargs: Any,
) -> tuple[PyTree, PyTree, dict[str, Any]]:
    """Fine-pruning after Liu et al. 2018: :func:`liu_prune`, then fine-tune the pruned model.

    The pruned entries stay exactly zero while fine-tuning (their updates are masked).

    Args:
      apply_fn, activations_fn, prunable, params, state, images, labels, layer, max_drop, mean,
        std, min_keep: See :func:`liu_prune`.
      key, epochs, lr: See :func:`jaxwm.attacks.finetune.finetune` (``epochs=0``: prune only).
      **finetune_kwargs: Other keyword arguments of :func:`~jaxwm.attacks.finetune.finetune`.

    Returns:
      ``(params, state, info)`` with ``info`` from :func:`liu_prune`.

    Example:
      >>> p, s, info = liu_fine_prune(model.apply, model.activations, model.prunable, params,
      ...                             state, x, y, layer="layer2/block0", max_drop=0.04, mean=m,
      ...                             std=sd, key=jax.random.key(0), epochs=2, lr=0.01)
    """
    _, mask, info = liu_prune(
        apply_fn, activations_fn, prunable, params, state, images, labels,
        layer=layer, max_drop=max_drop, mean=mean, std=std, min_keep=min_keep,
    )  # fmt: skip
    p, s = finetune(apply_fn, params, state, images, labels, mean=mean, std=std, key=key,
                    epochs=epochs, lr=lr, prune_keep=mask, **finetune_kwargs)  # fmt: skip
    return p, s, info
