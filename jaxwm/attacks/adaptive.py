"""The adaptive fine-tuning attack: an attacker who knows the partitioned scheme.

The partitioned method (Algorithm 1 of Lyu & Xian 2026, :mod:`jaxwm.embed`) embeds a watermark by
unfreezing the tail layers one at a time, last layer first, resetting the optimizer every epoch.
An attacker who knows this can run the very same procedure on clean data, aiming the updates at
exactly the layers that hold the watermark.

Example:
  >>> p, s = adaptive_finetune(model.apply, params, state, x, y, layers_to_turn=["layer4", "head"],
  ...                          mean=m, std=sd, key=jax.random.key(0), epochs=4, lr=0.01)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

from jaxwm import embed
from jaxwm.attacks.finetune import attack_hparams
from jaxwm.engine import epochs as engine
from jaxwm.engine.epochs import ApplyFn, ParamsState

PyTree = Any


def adaptive_finetune(
    apply_fn: ApplyFn,
    params: PyTree,
    state: PyTree,
    images: Any,
    labels: Any,
    *,
    layers_to_turn: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    key: jax.Array,
    epochs: int,
    lr: float,
    **kwargs: Any,
) -> ParamsState:
    """An attacker who knows the scheme replays Algorithm 1's unfreezing on clean data.

    The trainable layers per epoch are embedding's own (:func:`jaxwm.embed.unfrozen_per_epoch`:
    one schedule, so the attacker replays exactly what the owner ran), and the optimizer is reset
    at every epoch as in Algorithm 1 (so a ``"cosine"`` schedule restarts each epoch). The
    step counter, which seeds augmentation, keeps running. Each distinct stage compiles once.

    Args:
      apply_fn, params, state, images, labels: As in :func:`finetune`.
      layers_to_turn: Tail-layer path patterns in network order, e.g. ``["layer4", "head"]``.
      mean, std, key, lr: As in :func:`jaxwm.attacks.finetune.finetune`.
      epochs: Number of epochs (attack strength).
      **kwargs: Keyword arguments of :func:`jaxwm.attacks.finetune.attack_hparams`.

    Returns:
      ``(params, state)`` of the attacked model.

    Example:
      >>> p, s = adaptive_finetune(apply, params, state, x, y, layers_to_turn=["layer4", "head"],
      ...                          mean=m, std=sd, key=k, epochs=4, lr=0.01)
    """
    for bad in ("trainable", "reinit", "init_fn", "prune_keep"):
        if bad in kwargs:
            raise TypeError(f"adaptive_finetune does not take {bad!r}")
    if not layers_to_turn:
        raise ValueError("layers_to_turn must name at least one layer pattern")
    hp = attack_hparams(epochs, lr, **kwargs)
    plan = embed.unfrozen_per_epoch(list(layers_to_turn), epochs) if epochs > 0 else []
    return engine.train_epochs(
        apply_fn, params, state, images, labels, hp,
        mean=mean, std=std, key=key, plan=plan, reset_each_epoch=True,
    )  # fmt: skip
