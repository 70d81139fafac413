"""Fine-tuning removal attacks: FTLL / FTAL / RTLL / RTAL, and strength sweeps.

An attacker holding a stolen model and some clean data keeps training it, hoping the watermark
fades before clean accuracy does (Adi et al. 2018 name four variants; the
Watermark-Robustness-Toolbox of Lukas et al. 2022 runs them at scale):

* FTLL -- fine-tune the last layer only;        FTAL -- fine-tune all layers;
* RTLL -- re-initialise the last layer, train it; RTAL -- re-initialise it, train all layers.

The adaptive attacker, who replays the partitioned scheme's own gradual unfreezing, is in
:mod:`jaxwm.attacks.adaptive`.

Attack *strength* is the number of epochs at a fixed learning rate (the x axis of the paper's
Figure 2, "increasing fine-tuning degree"). :func:`finetune_sweep` produces a whole strength axis
from one training run: with ``schedule="constant"`` its snapshot after ``e`` epochs is
bit-identical to ``finetune(..., epochs=e)``.

Everything is built on :func:`jaxwm.engine.train.make_train_step` / :func:`~jaxwm.engine.train.make_train_chunk`
(one jitted ``lax.scan`` per epoch, cached by configuration; see :mod:`jaxwm.engine.epochs`).
Re-initialisation and prune masks are this module's: the engine sees a prepared model and an
:class:`~jaxwm.engine.epochs.UpdateFilter`.

Example:
  >>> p, s = ftll(model.apply, params, state, x_u8, y, mean=mean, std=std,
  ...             key=jax.random.key(1), epochs=5, lr=0.01)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxwm.engine import epochs as engine
from jaxwm.engine import partition, train
from jaxwm.engine.epochs import ApplyFn, InitFn, ParamsState
from jaxwm.engine.hparams import Hparams

PyTree = Any


def finetune(
    apply_fn: ApplyFn,
    params: PyTree,
    state: PyTree,
    images: Any,
    labels: Any,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    key: jax.Array,
    epochs: int,
    lr: float,
    **kwargs: Any,
) -> ParamsState:
    """Fine-tunes a stolen model on the attacker's labelled data.

    Args:
      apply_fn: Model apply (contract in :mod:`jaxwm.models`).
      params, state: The stolen model (not modified; the result is new arrays).
      images: uint8 NHWC attacker images. labels: int32 ``(N,)`` labels.
      mean, std: Per-channel normalisation in [0, 1] units.
      key: PRNG key; it drives re-initialisation, shuffling and augmentation, and the result is
        bit-identical for the same key.
      epochs: Attack strength (0 returns the model, re-initialised where ``reinit`` says).
      lr: Learning rate (the peak for ``schedule="cosine"``).
      **kwargs: The optional arguments of :func:`finetune_sweep` (``trainable``, ``reinit``,
        ``init_fn``, ``prune_keep``, ``batch_size``, ``crop_pad``, ``flip``, ``optimizer``,
        ``schedule``, ``momentum``, ``weight_decay``).

    Returns:
      ``(params, state)`` of the attacked model.

    Example:
      >>> p, s = finetune(model.apply, params, state, x, y, mean=m, std=sd,
      ...                 key=jax.random.key(0), epochs=3, lr=0.01, trainable=["layer2", "head"])
    """
    return finetune_sweep(
        apply_fn, params, state, images, labels,
        mean=mean, std=std, key=key, strengths=[epochs], lr=lr, **kwargs,
    )[0]  # fmt: skip


def attack_hparams(
    epochs: int,
    lr: float,
    *,
    batch_size: int = 128,
    crop_pad: int = 0,
    flip: bool = False,
    optimizer: str = "sgd",
    schedule: str = "constant",
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
) -> Hparams:
    """The attacks' training settings as the engine's :class:`~jaxwm.engine.hparams.Hparams`.

    Args:
      epochs: Epochs to train.
      lr: Learning rate (the peak for ``schedule="cosine"``).
      batch_size: Batch size, clipped to the number of images; the remainder of each shuffled
        epoch is dropped.
      crop_pad, flip: Augmentation (off by default).
      optimizer: "sgd" (Nesterov momentum) or "adamw".
      schedule: "constant" or "cosine" (decaying over the whole run).
      momentum, weight_decay: Optimizer settings (weight decay on kernels only).
    """
    return Hparams(
        epochs=int(epochs), batch_size=int(batch_size), peak_lr=float(lr), schedule=schedule,
        optimizer=optimizer, momentum=float(momentum), nesterov=momentum > 0,
        weight_decay=float(weight_decay), crop_pad=int(crop_pad), flip=bool(flip),
    )  # fmt: skip


def reinitialise(
    params: PyTree,
    state: PyTree,
    patterns: Sequence[str],
    init_fn: InitFn,
    key: jax.Array,
    sample: jax.Array,
) -> ParamsState:
    """Fresh values (from ``init_fn(key, sample)``) for the leaves matched by ``patterns``.

    Stateful modules all of whose parameters are re-initialised get fresh statistics too.
    """
    fresh_p, fresh_s = train.compiled_init(init_fn)(key, sample)  # one compilation, not per op
    sel = partition.trainable_mask(params, list(patterns), log_table=False)
    params = jax.tree.map(lambda m, new, old: new if m else old, sel, fresh_p, params)
    modules = partition.frozen_modules(jax.tree.map(lambda m: not m, sel))
    s_sel = partition.state_mask(state, modules)
    state = jax.tree.map(lambda m, new, old: new if m else old, s_sel, fresh_s, state)
    return params, state


def keep_zero(updates: PyTree, keep: PyTree) -> PyTree:
    """The updates with pruned entries (``keep`` False) zeroed: an engine ``UpdateFilter`` fn.

    Module-level, with the mask as filter *state*: one compiled epoch serves every mask.
    """
    return jax.tree.map(lambda u, m: jnp.where(m, u, jnp.zeros_like(u)), updates, keep)


def finetune_sweep(
    apply_fn: ApplyFn,
    params: PyTree,
    state: PyTree,
    images: Any,
    labels: Any,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    key: jax.Array,
    strengths: Sequence[int],
    lr: float,
    trainable: Sequence[str] | None = None,
    reinit: Sequence[str] | None = None,
    init_fn: InitFn | None = None,
    prune_keep: PyTree | None = None,
    **settings: Any,
) -> list[ParamsState]:
    """Fine-tuning at increasing strengths (epochs) from a single training run.

    Args:
      apply_fn, params, state, images, labels, mean, std, key, lr: As in :func:`finetune`.
      strengths: Epoch counts (any order, duplicates allowed); the run trains to the largest.
      trainable: Path patterns (see :mod:`jaxwm.engine.partition`) of the leaves to train;
        None trains everything. Frozen leaves and their BatchNorm statistics stay bit-identical.
      reinit: Path patterns of leaves re-initialised (from ``init_fn``) before training.
      init_fn: ``init(key, sample) -> (params, state)``; required with ``reinit``.
      prune_keep: Optional bool pytree like ``params`` (False = pruned): pruned entries are
        zeroed first and their updates masked, so they stay exactly zero throughout.
      **settings: Keyword arguments of :func:`attack_hparams` (``batch_size``, ``crop_pad``,
        ``flip``, ``optimizer``, ``schedule``, ``momentum``, ``weight_decay``).

    Returns:
      ``(params, state)`` per entry of ``strengths``, in the given order. With the default
      ``schedule="constant"`` entry ``e`` equals ``finetune(..., epochs=e)`` bit for bit; with
      ``"cosine"`` the snapshots are points along one run whose schedule spans the largest.

    Example:
      >>> curve = finetune_sweep(model.apply, params, state, x, y, mean=m, std=sd,
      ...                        key=jax.random.key(0), strengths=[0, 1, 2, 4, 8], lr=0.01)
    """
    if not strengths or min(int(s) for s in strengths) < 0:
        raise ValueError(f"strengths must be a non-empty list of epochs >= 0, got {strengths}")
    if reinit and init_fn is None:
        raise ValueError("reinit needs init_fn (the model's init(key, sample) -> (params, state))")
    order = sorted(set(int(s) for s in strengths))
    hp = attack_hparams(order[-1], lr, **settings)
    k_prepare, _, _ = engine.split_key(key)
    if reinit:
        sample = train.normalize(jnp.asarray(images[:1], jnp.uint8), mean, std)
        params, state = reinitialise(params, state, reinit, init_fn, k_prepare, sample)
    update_filter = None
    if prune_keep is not None:
        params = jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, prune_keep)
        keep = jax.tree.map(lambda m: np.asarray(m, bool), prune_keep)
        update_filter = engine.UpdateFilter(keep_zero, keep)
    by_epoch = {0: (params, state)}

    def snapshot(epoch, p, s, metrics):
        del metrics
        if epoch in order and epoch < order[-1]:  # the last one is the result itself
            by_epoch[epoch] = (engine.copy_tree(p), engine.copy_tree(s))
        return False

    by_epoch[order[-1]] = engine.train_epochs(
        apply_fn, params, state, images, labels, hp, mean=mean, std=std, key=key,
        plan=[trainable] * hp.epochs, update_filter=update_filter, on_epoch=snapshot,
    )  # fmt: skip
    return [by_epoch[int(s)] for s in strengths]


def ftll(
    apply_fn: ApplyFn,
    params: PyTree,
    state: PyTree,
    images: Any,
    labels: Any,
    *,
    last_layer: str = "head",
    **kwargs: Any,
) -> ParamsState:
    """FTLL (Adi et al. 2018): fine-tune the last layer only; all else stays bit-identical.

    Args:
      apply_fn, params, state, images, labels: As in :func:`finetune`.
      last_layer: Path pattern of the last layer.
      **kwargs: Keyword arguments of :func:`finetune` (``mean``, ``std``, ``key``, ``epochs``,
        ``lr``, ...).

    Returns:
      ``(params, state)`` of the attacked model.

    Example:
      >>> p, s = ftll(apply, params, state, x, y, mean=m, std=sd, key=k, epochs=2, lr=0.01)
    """
    return finetune(apply_fn, params, state, images, labels, trainable=[last_layer], **kwargs)


def ftal(
    apply_fn: ApplyFn, params: PyTree, state: PyTree, images: Any, labels: Any, **kwargs: Any
) -> ParamsState:
    """FTAL (Adi et al. 2018): fine-tune all layers.

    Args:
      apply_fn, params, state, images, labels: As in :func:`finetune`.
      **kwargs: Keyword arguments of :func:`finetune`.

    Returns:
      ``(params, state)`` of the attacked model.

    Example:
      >>> p, s = ftal(apply, params, state, x, y, mean=m, std=sd, key=k, epochs=2, lr=0.01)
    """
    return finetune(apply_fn, params, state, images, labels, trainable=None, **kwargs)


def rtll(
    apply_fn: ApplyFn,
    params: PyTree,
    state: PyTree,
    images: Any,
    labels: Any,
    *,
    init_fn: InitFn,
    last_layer: str = "head",
    **kwargs: Any,
) -> ParamsState:
    """RTLL (Adi et al. 2018): re-initialise the last layer, then train only it.

    Even with ``epochs=0`` the last layer differs from the stolen one (it is fresh).

    Args:
      apply_fn, params, state, images, labels: As in :func:`finetune`.
      init_fn: The model's ``init(key, sample) -> (params, state)``.
      last_layer: Path pattern of the last layer.
      **kwargs: Keyword arguments of :func:`finetune`.

    Returns:
      ``(params, state)`` of the attacked model.

    Example:
      >>> p, s = rtll(apply, params, state, x, y, init_fn=model.init, mean=m, std=sd, key=k,
      ...             epochs=2, lr=0.01)
    """
    return finetune(
        apply_fn,
        params,
        state,
        images,
        labels,
        trainable=[last_layer],
        reinit=[last_layer],
        init_fn=init_fn,
        **kwargs,
    )


def rtal(
    apply_fn: ApplyFn,
    params: PyTree,
    state: PyTree,
    images: Any,
    labels: Any,
    *,
    init_fn: InitFn,
    last_layer: str = "head",
    **kwargs: Any,
) -> ParamsState:
    """RTAL (Adi et al. 2018): re-initialise the last layer, then train all layers.

    Args:
      apply_fn, params, state, images, labels: As in :func:`finetune`.
      init_fn: The model's ``init(key, sample) -> (params, state)``.
      last_layer: Path pattern of the last layer.
      **kwargs: Keyword arguments of :func:`finetune`.

    Returns:
      ``(params, state)`` of the attacked model.

    Example:
      >>> p, s = rtal(apply, params, state, x, y, init_fn=model.init, mean=m, std=sd, key=k,
      ...             epochs=2, lr=0.01)
    """
    return finetune(
        apply_fn,
        params,
        state,
        images,
        labels,
        trainable=None,
        reinit=[last_layer],
        init_fn=init_fn,
        **kwargs,
    )
