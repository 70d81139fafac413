"""Epoch-by-epoch training with a trainable set that may change every epoch.

The engine behind watermark embedding (Algorithm 1: a stage plan, optimizer reset every
epoch) and the fine-tuning attacks (FTLL/FTAL/RTLL/RTAL, the adaptive attacker, fine-pruning).
One jitted epoch (:func:`jaxwm.engine.train.make_train_chunk` over :func:`jaxwm.engine.train.make_train_step`)
is compiled per configuration and cached, so repeating a run with another key, other data of
the same shape, or another pruning mask reuses it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxwm.engine import compiled, loop, optim, partition, train

PyTree = Any
ApplyFn = Callable[..., tuple[jax.Array, PyTree]]
InitFn = Callable[[jax.Array, jax.Array], tuple[PyTree, PyTree]]
ParamsState = tuple[PyTree, PyTree]


@dataclasses.dataclass(frozen=True)
class _Recipe:
    """Everything that shapes the compiled epoch apart from the model and the masks (hashable)."""

    lr: float
    total_steps: int
    optimizer: str
    schedule: str
    momentum: float
    weight_decay: float
    batch_size: int
    crop_pad: int
    flip: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    freeze_state: bool = False


class _KeepZeroState(NamedTuple):
    keep: PyTree  # bool leaves like params; False = pruned, held at exactly zero


def _keep_zero(keep: PyTree | None) -> optax.GradientTransformation:
    """Zeroes the updates of pruned entries, so pruned (zero) weights stay exactly zero.

    The mask lives in the optimizer *state*, not in the closure of ``update``: one compiled
    epoch then serves every pruning mask of the same shape (a pruning-ratio sweep compiles
    once). ``init`` needs the mask, so build this transformation with the mask to initialise.
    """

    def init(params: PyTree) -> _KeepZeroState:
        if keep is None:
            raise ValueError("_keep_zero needs the mask to initialise its state")
        # A copy (jnp.array), since the compiled epoch donates the optimizer state.
        return _KeepZeroState(jax.tree.map(lambda m: jnp.array(m, bool), keep))

    def update(updates, state, params=None):
        del params
        out = jax.tree.map(lambda u, m: jnp.where(m, u, jnp.zeros_like(u)), updates, state.keep)
        return out, state

    return optax.GradientTransformation(init, update)


def _make_tx(
    r: _Recipe, trainable: PyTree | None, prune_keep: PyTree | None, has_prune: bool
) -> optax.GradientTransformation:
    tx = optim.make_optimizer(
        peak_lr=r.lr,
        total_steps=max(r.total_steps, 1),
        schedule=r.schedule,
        optimizer=r.optimizer,
        momentum=r.momentum,
        nesterov=r.momentum > 0,
        weight_decay=r.weight_decay,
    )
    if trainable is not None:
        tx = partition.masked(tx, trainable)
    if has_prune:
        # Outside the partition wrapper: it must see the full update tree.
        tx = optax.chain(tx, _keep_zero(prune_keep))
    return tx


@compiled.cached
def _compiled_epoch(
    apply_fn: ApplyFn, r: _Recipe, trainable_key: tuple | None, has_prune: bool, steps: int
) -> Callable:
    """One jitted epoch for this configuration (cached: the jit cache is per function object)."""
    trainable = partition.mask_from_key(trainable_key)
    # The prune mask is optimizer state (see _keep_zero): update never reads the closure's mask.
    tx = _make_tx(r, trainable, None, has_prune)
    step = train.make_train_step(
        apply_fn, tx, r.mean, r.std, mask=trainable, crop_pad=r.crop_pad, flip=r.flip,
        freeze_state=r.freeze_state,
    )  # fmt: skip
    return train.make_train_chunk(step, r.batch_size, steps)


def copy_tree(tree: PyTree) -> PyTree:
    # The compiled epoch donates its carry; copies keep the caller's arrays alive.
    return jax.tree.map(jnp.copy, tree)


def _reinit(
    params: PyTree,
    state: PyTree,
    patterns: Sequence[str],
    init_fn: InitFn,
    key: jax.Array,
    sample: jax.Array,
) -> ParamsState:
    fresh_p, fresh_s = train.compiled_init(init_fn)(key, sample)  # one compilation, not per op
    sel = partition.trainable_mask(params, list(patterns), log_table=False)
    params = jax.tree.map(lambda m, new, old: new if m else old, sel, fresh_p, params)
    # Stateful modules all of whose parameters are re-initialised get fresh statistics too.
    modules = partition.frozen_modules(jax.tree.map(lambda m: not m, sel))
    s_sel = partition.state_mask(state, modules)
    state = jax.tree.map(lambda m, new, old: new if m else old, s_sel, fresh_s, state)
    return params, state


def train_epochs(
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
    batch_size: int = 128,
    plan: Callable[[int], Sequence[str] | None],
    reset_each_epoch: bool,
    snapshots: Sequence[int],
    reinit: Sequence[str] | None = None,
    init_fn: InitFn | None = None,
    prune_keep: PyTree | None = None,
    crop_pad: int = 0,
    flip: bool = False,
    optimizer: str = "sgd",
    schedule: str = "constant",
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    freeze_state: bool = False,
    wrap: bool = False,
    on_epoch: Callable[[int, PyTree, PyTree, dict], bool] | None = None,
) -> list[ParamsState]:
    """Trains epoch by epoch and returns ``(params, state)`` after each count in ``snapshots``.

    Args:
      apply_fn, params, state, images, labels, mean, std, key, epochs, lr, batch_size: See
        :func:`jaxwm.attacks.finetune.finetune`.
      plan: ``plan(epoch)`` -> path patterns trainable in that epoch, or None for all.
      reset_each_epoch: Re-initialise the optimizer (and its schedule) at every epoch;
        otherwise only when ``plan`` changes the trainable set.
      snapshots: Epoch counts (sorted, unique, each in ``0..epochs``) to return.
      reinit, init_fn, prune_keep, crop_pad, flip, optimizer, schedule, momentum,
        weight_decay: See :func:`jaxwm.attacks.finetune.finetune`.
      freeze_state: Keep all model state (BatchNorm statistics) fixed, every layer in
        inference mode (see :func:`jaxwm.engine.train.make_train_step`).
      wrap: Use every example every epoch: ``ceil(n / batch_size)`` steps, the last batch
        wrapping around to the start of the shuffle (for small sets such as a trigger set);
        otherwise the remainder of the shuffle is dropped.
      on_epoch: Called as ``on_epoch(epoch, params, state, metrics)`` after each epoch
        (1-based; ``metrics`` are the epoch's summed ``loss_sum``/``correct``/``count``); a
        true result stops training there. The arrays are only valid during the call.

    Returns:
      One ``(params, state)`` per entry of ``snapshots`` reached; when ``on_epoch`` stopped
      training early, the final ``(params, state)`` is appended.

    Example:
      >>> [(p, s)] = train_epochs(apply, params, state, x, y, mean=m, std=sd, key=k, epochs=2,
      ...                         lr=0.01, plan=lambda e: None, reset_each_epoch=False,
      ...                         snapshots=[2])
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if reinit and init_fn is None:
        raise ValueError("reinit needs init_fn (the model's init(key, sample) -> (params, state))")
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    k_init, k_data, k_run = jax.random.split(key, 3)
    images = jnp.asarray(images, jnp.uint8)
    labels = jnp.asarray(labels, jnp.int32)
    n = int(images.shape[0])
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    batch_size = min(batch_size, n)  # a small attacker set trains full-batch
    steps = -(-n // batch_size) if wrap else loop.epoch_geometry(n, batch_size, 0)[0]

    if reinit:
        sample = train.normalize(images[:1], mean, std)
        params, state = _reinit(params, state, reinit, init_fn, k_init, sample)
    if prune_keep is not None:
        params = jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, prune_keep)

    # With the optimizer reset every epoch its schedule restarts, so it spans one epoch.
    total = steps if reset_each_epoch else epochs * steps
    recipe = _Recipe(
        lr=float(lr),
        total_steps=1 if schedule == "constant" else total,
        optimizer=optimizer,
        schedule=schedule,
        momentum=float(momentum),
        weight_decay=float(weight_decay),
        batch_size=batch_size,
        crop_pad=int(crop_pad),
        flip=bool(flip),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        freeze_state=bool(freeze_state),
    )
    has_prune = prune_keep is not None
    ts, out, current = None, [], None
    if 0 in snapshots:
        out.append((params, state))
    for epoch in range(epochs):
        patterns = plan(epoch)
        tmask = (
            None
            if patterns is None
            else partition.trainable_mask(params, list(patterns), log_table=False)
        )
        tkey = partition.mask_key(tmask)
        # The learning rate and run length live in the optimizer state (jaxwm.engine.optim), so they
        # are normalised out of the cache key: runs differing only in them share a compilation.
        shape = dataclasses.replace(recipe, lr=1.0, total_steps=1)
        run = _compiled_epoch(apply_fn, shape, tkey, has_prune, steps)
        if ts is None or (reset_each_epoch or tkey != current):
            current_params = params if ts is None else ts.params
            opt_state = _make_tx(recipe, tmask, prune_keep, has_prune).init(current_params)
            if ts is None:
                ts = train.TrainState(
                    copy_tree(params),
                    copy_tree(state),
                    opt_state,
                    jnp.zeros((), jnp.int32),
                    jax.random.key_data(k_run),
                )
            else:
                ts = ts._replace(opt_state=opt_state)
            current = tkey
        perm = train.epoch_permutation(k_data, n, epoch)
        if wrap:
            perm = jnp.concatenate([perm, perm[: steps * batch_size - n]])
        ts, metrics = run(ts, images, labels, perm, 0)
        if on_epoch is not None and on_epoch(epoch + 1, ts.params, ts.state, metrics):
            out.append((ts.params, ts.state))
            return out
        if epoch + 1 in snapshots:
            out.append(
                (copy_tree(ts.params), copy_tree(ts.state))
                if epoch + 1 < epochs
                else (ts.params, ts.state)
            )
    return out
