"""The training engine: one compiled epoch per configuration, and the pieces every loop shares.

Victim training (:func:`jaxwm.engine.loop.fit`), watermark embedding (:mod:`jaxwm.embed`, whose
Algorithm 1 loop is written out over these pieces) and the fine-tuning attacks
(:func:`train_epochs`) all train through :func:`epoch_fn`; sweeps
(:mod:`jaxwm.engine.sweep`) vmap the same :func:`step_fn` and distillation
(:mod:`jaxwm.attacks.distill`) shares the optimizer and epoch geometry. :func:`epoch_fn` is a
jitted chunk of steps
(:func:`jaxwm.engine.train.make_train_chunk`) built from a :class:`~jaxwm.engine.hparams.Hparams`,
a trainable mask and an optional :class:`UpdateFilter`, cached in :mod:`jaxwm.engine.compiled`.
The optimizer's numbers (learning rate, run length) are state, so one compiled epoch serves every
key, data set of the same shape, learning rate and filter state.

What only one caller needs stays with that caller: re-initialising layers and prune masks are
the attacks' (:mod:`jaxwm.attacks.finetune`, passed here as an :class:`UpdateFilter`), snapshots
and early stopping are an ``on_epoch`` callback.

Example:
  >>> hp = Hparams(epochs=2, batch_size=32, peak_lr=0.01, schedule="constant")
  >>> params, state = train_epochs(apply, params, state, x, y, hp, mean=m, std=sd, key=k)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding

from jaxwm.engine import compiled, partition, train
from jaxwm.engine.hparams import Hparams, optimizer_for, program_key

PyTree = Any
ApplyFn = Callable[..., tuple[jax.Array, PyTree]]
InitFn = Callable[[jax.Array, jax.Array], tuple[PyTree, PyTree]]
ParamsState = tuple[PyTree, PyTree]
OnEpoch = Callable[[int, PyTree, PyTree, dict], bool]


class UpdateFilter(NamedTuple):
    """A constraint applied to every update after the optimizer: ``fn(updates, state)``.

    ``state`` rides in the optimizer state (donated and carried by the compiled epoch), not in
    ``fn``'s closure, and compiled epochs are cached on ``fn``'s identity: make ``fn`` a
    module-level function so every ``state`` of the same shape (e.g. every pruning mask of a
    pruning-ratio sweep) shares one compilation.
    """

    fn: Callable[[PyTree, PyTree], PyTree]
    state: PyTree


def _filtered(fn: Callable, state: PyTree) -> optax.GradientTransformation:
    def init(params: PyTree) -> PyTree:
        del params
        if state is None:
            raise ValueError("an UpdateFilter needs its state to initialise")
        return jax.tree.map(jnp.array, state)  # a copy: the compiled epoch donates it

    def update(updates, filter_state, params=None):
        del params
        return fn(updates, filter_state), filter_state

    return optax.GradientTransformation(init, update)


def split_key(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(k_prepare, k_data, k_run)``: the caller's preparation, data order, step randomness.

    ``k_prepare`` is never used by the engine (attacks re-initialise layers with it), so the
    shuffling and augmentation do not depend on whether a caller prepared anything.
    """
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    k_prepare, k_data, k_run = jax.random.split(key, 3)
    return k_prepare, k_data, k_run


def epoch_geometry(n: int, batch_size: int, steps_per_call: int) -> tuple[int, int]:
    """``(chunk_steps, chunks_per_epoch)`` for ``n`` examples.

    An epoch is ``n // batch_size`` steps (the remainder of the shuffled order is dropped),
    rounded down to whole chunks of ``steps_per_call`` (0 = the whole epoch in one call).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    steps = n // batch_size
    if steps == 0:
        raise ValueError(
            f"batch_size {batch_size} is larger than the {n} training examples; lower it"
        )
    chunk = steps if steps_per_call <= 0 else min(steps_per_call, steps)
    return chunk, steps // chunk


def epoch_shape(n: int, batch_size: int, *, wrap: bool) -> tuple[int, int]:
    """``(batch_size, steps)`` of one epoch over ``n`` examples, the batch clipped to ``n``.

    ``wrap``: ``ceil(n / batch)`` steps, the last batch wrapping around to the start of the
    shuffle, so every example is used every epoch (small sets such as a trigger set); otherwise
    the remainder of the shuffle is dropped.
    """
    batch_size = min(batch_size, n)  # a small set trains full-batch
    steps = -(-n // batch_size) if wrap else epoch_geometry(n, batch_size, 0)[0]
    return batch_size, steps


def epoch_order(key: jax.Array, n: int, epoch: int, length: int) -> jax.Array:
    """The epoch's shuffle of ``range(n)``, wrapped around to ``length`` indices if longer."""
    perm = train.epoch_permutation(key, n, epoch)
    return perm if length <= n else jnp.concatenate([perm, perm[: length - n]])


def optimizer(
    hp: Hparams,
    mask: PyTree | None,
    total_steps: int,
    *,
    steps_per_epoch: int = 0,
    update_filter: UpdateFilter | None = None,
) -> optax.GradientTransformation:
    """``hp``'s optimizer over ``total_steps`` steps, masked to ``mask`` and then filtered.

    Args:
      hp: Hyper-parameters.
      mask: Trainable mask (see :mod:`jaxwm.engine.partition`); None trains everything.
      total_steps: Schedule length (a run, or one epoch when the optimizer restarts each epoch).
      steps_per_epoch: Converts ``hp.warmup_epochs`` to steps.
      update_filter: Applied after the mask: it sees the full update tree.
    """
    tx = optimizer_for(hp, total_steps, steps_per_epoch=steps_per_epoch)
    if mask is not None:
        tx = partition.masked(tx, mask)
    if update_filter is not None:
        tx = optax.chain(tx, _filtered(update_filter.fn, update_filter.state))
    return tx


def step_fn(
    apply_fn: ApplyFn,
    hp: Hparams,
    mean: Sequence[float],
    std: Sequence[float],
    mask: PyTree | None = None,
    filter_fn: Callable | None = None,
) -> Callable:
    """One (not jitted) training step for ``hp``: what every compiled program of the engine runs.

    Its optimizer is a template: ``update`` reads the schedule's numbers (and a filter's state)
    from the optimizer state, so the step serves every learning rate, run length and filter
    state; build that state with :func:`optimizer`.
    """
    f = None if filter_fn is None else UpdateFilter(filter_fn, None)
    tx = optimizer(hp, mask, 1, update_filter=f)
    return train.make_train_step(
        apply_fn, tx, mean, std, mask=mask, label_smoothing=hp.label_smoothing,
        crop_pad=hp.crop_pad, flip=hp.flip, bn_mode=hp.bn_mode,
    )  # fmt: skip


@compiled.cached
def _program(
    apply_fn: ApplyFn,
    hp: Hparams,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    mask_key: tuple | None,
    steps: int,
    sharding: NamedSharding | None,
    filter_fn: Callable | None,
) -> Callable:
    step = step_fn(apply_fn, hp, mean, std, partition.mask_from_key(mask_key), filter_fn)
    return train.make_train_chunk(step, hp.batch_size, steps, batch_sharding=sharding)


def epoch_fn(
    apply_fn: ApplyFn,
    hp: Hparams,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    mask: PyTree | None,
    steps: int,
    batch_size: int | None = None,
    sharding: NamedSharding | None = None,
    update_filter: UpdateFilter | None = None,
) -> Callable:
    """The compiled chunk of ``steps`` training steps, ``run(ts, images, labels, order, start)``.

    Cached in :mod:`jaxwm.engine.compiled` under ``(apply_fn, program_key(hp), mean, std,
    mask_key(mask), steps, sharding, update_filter.fn)``: calls that differ only in keys, data,
    learning rate, run length or filter state return the same compiled function.

    Args:
      apply_fn: Model apply (contract in :mod:`jaxwm.models`).
      hp: Hyper-parameters.
      mean, std: Input normalisation.
      mask: Trainable mask; None trains everything.
      steps: Steps per call.
      batch_size: The batch size used, if not ``hp.batch_size`` (clipped to a small set).
      sharding: Batch sharding for data parallelism (see :func:`train.make_train_chunk`).
      update_filter: Optional constraint on the updates (only its ``fn`` is part of the key).
    """
    return _program(
        apply_fn,
        program_key(hp, batch_size),
        tuple(float(v) for v in mean),
        tuple(float(v) for v in std),
        partition.mask_key(mask),
        int(steps),
        sharding,
        None if update_filter is None else update_filter.fn,
    )


def trainable(params: PyTree, patterns: Sequence[str]) -> PyTree:
    """The trainable mask of ``patterns`` (path patterns, see :mod:`jaxwm.engine.partition`)."""
    return partition.trainable_mask(params, list(patterns), log_table=False)


def copy_tree(tree: PyTree) -> PyTree:
    """Device copies of every leaf (a compiled epoch donates its carry; copies keep the caller's)."""
    return jax.tree.map(jnp.copy, tree)


def start(params: PyTree, state: PyTree, k_run: jax.Array) -> train.TrainState:
    """A training state over copies of ``params``/``state``; the optimizer state is set later."""
    return train.TrainState(
        copy_tree(params), copy_tree(state), None, jnp.zeros((), jnp.int32),
        jax.random.key_data(k_run),
    )  # fmt: skip


def train_epochs(
    apply_fn: ApplyFn,
    params: PyTree,
    state: PyTree,
    images: Any,
    labels: Any,
    hp: Hparams,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    key: jax.Array,
    plan: Sequence[Sequence[str] | None] | None = None,
    reset_each_epoch: bool = False,
    update_filter: UpdateFilter | None = None,
    on_epoch: OnEpoch | None = None,
) -> ParamsState:
    """Trains ``hp.epochs`` epochs; the trainable set may change every epoch.

    Args:
      apply_fn, params, state: The model (``params``/``state`` are not modified).
      images, labels: uint8 NHWC images and int labels (the remainder of each shuffled epoch is
        dropped; the batch is clipped to a smaller set).
      hp: Hyper-parameters (``steps_per_call``, ``eval_every``, ``checkpoint_every`` unused).
      mean, std: Input normalisation.
      key: Split by :func:`split_key`; its data and run parts drive shuffling and augmentation.
      plan: Path patterns trainable in each epoch (``hp.epochs`` entries), None for all;
        None (default): everything, every epoch.
      reset_each_epoch: A fresh optimizer (and schedule, spanning one epoch) every epoch;
        otherwise only when the trainable set changes, the schedule spanning the run.
      update_filter: Optional constraint on every update (e.g. pruned entries held at zero).
      on_epoch: Called as ``on_epoch(epoch, params, state, metrics)`` after each epoch
        (1-based; summed ``loss_sum``/``correct``/``count``); a true result stops training.
        The arrays are only valid during the call.

    Returns:
      ``(params, state)`` after the last epoch trained.
    """
    if hp.epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {hp.epochs}")
    if hp.peak_lr <= 0:
        raise ValueError(f"lr must be > 0, got {hp.peak_lr}")
    plan = [None] * hp.epochs if plan is None else list(plan)
    if len(plan) != hp.epochs:
        raise ValueError(f"plan has {len(plan)} entries for {hp.epochs} epochs")
    _, k_data, k_run = split_key(key)
    images, labels = jnp.asarray(images, jnp.uint8), jnp.asarray(labels, jnp.int32)
    n = int(images.shape[0])
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    batch_size, steps = epoch_shape(n, hp.batch_size, wrap=False)
    total = steps if reset_each_epoch else hp.epochs * steps
    ts, current = start(params, state, k_run), None
    for epoch, patterns in enumerate(plan):
        mask = None if patterns is None else trainable(params, patterns)
        mkey = partition.mask_key(mask)
        if epoch == 0 or reset_each_epoch or mkey != current:
            tx = optimizer(hp, mask, total, steps_per_epoch=steps, update_filter=update_filter)
            ts, current = ts._replace(opt_state=tx.init(ts.params)), mkey
        run = epoch_fn(
            apply_fn, hp, mean=mean, std=std, mask=mask, steps=steps, batch_size=batch_size,
            update_filter=update_filter,
        )  # fmt: skip
        ts, metrics = run(ts, images, labels, epoch_order(k_data, n, epoch, n), 0)
        if on_epoch is not None and on_epoch(epoch + 1, ts.params, ts.state, metrics):
            break
    return ts.params, ts.state
