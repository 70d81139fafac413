"""Watermark embedding: partitioned (Algorithm 1 of Lyu & Xian 2026) and the full fine-tuning baseline.

Partitioned embedding freezes every parameter, reverses the owner's list of tail layers
``layers_to_turn`` and, over the epochs, unfreezes them cumulatively one stage at a time
(``stage = epoch // (epochs // n)``), resetting the optimizer at every epoch and training on the
watermark set D. The baseline trains every parameter on D with the same loop.

Layers are path patterns (see :mod:`jaxwm.engine.partition`), so this works for any network whose
parameters are a pytree; each stage compiles once and never differentiates frozen leaves.

Example:
  >>> params, state, history = partitioned_embed(
  ...     model.apply, params, state, trig.images, trig.labels,
  ...     layers_to_turn=["layer3", "layer4", "head"],
  ...     settings=EmbedSettings(epochs=30, lr=1e-3),
  ...     mean=ds.mean, std=ds.std, key=jax.random.key(0))
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxwm.engine import partition, train
from jaxwm.engine.epochs import train_epochs

log = logging.getLogger(__name__)
PyTree = Any


def stage_schedule(epochs: int, n_layers: int) -> list[int]:
    """Index of the last unfrozen entry of the reversed layer list, for every epoch.

    Algorithm 1 sets ``stage = epoch // (epochs // n)``. Two edge cases it leaves open:

    * ``epochs`` not a multiple of ``n``: the stage would pass ``n - 1``; it is capped there
      (the extra epochs train all listed layers).
    * ``epochs < n``: ``epochs // n`` is 0. We unfreeze ``ceil(n / epochs)`` layers per epoch,
      ``stage = min(ceil((epoch + 1) * n / epochs), n) - 1``, so the last epoch still trains every
      listed layer and the last layer is still unfrozen first.

    Example:
      >>> stage_schedule(6, 3)
      [0, 0, 1, 1, 2, 2]
      >>> stage_schedule(2, 3)
      [1, 2]
    """
    if epochs < 1 or n_layers < 1:
        raise ValueError(f"epochs ({epochs}) and the number of layers ({n_layers}) must be >= 1")
    if epochs >= n_layers:
        per = epochs // n_layers
        return [min(e // per, n_layers - 1) for e in range(epochs)]
    return [min(math.ceil((e + 1) * n_layers / epochs), n_layers) - 1 for e in range(epochs)]


def unfrozen_per_epoch(layers_to_turn: Sequence[str], epochs: int) -> list[tuple[str, ...]]:
    """The patterns trained at each epoch: Algorithm 1's reversed, cumulative unfreezing.

    Example:
      >>> unfrozen_per_epoch(["layer4", "head"], 4)
      [('head',), ('head',), ('head', 'layer4'), ('head', 'layer4')]
    """
    layers = list(reversed(layers_to_turn))
    return [tuple(layers[: s + 1]) for s in stage_schedule(epochs, len(layers))]


@dataclasses.dataclass(frozen=True)
class EmbedSettings:
    """Optimisation settings of one embedding run (both methods).

    Attributes:
      epochs: Passes over the training set (D, plus clean data when mixing).
      lr: Learning rate (constant within an epoch; the optimizer restarts every epoch).
      batch_size: Batch size (clipped to the training-set size).
      optimizer: "adamw" or "sgd".
      weight_decay: Decoupled weight decay on kernels.
      freeze_bn_stats: Keep every BatchNorm in inference mode with its statistics unchanged, so
        the function trained is exactly the one later verified and the triggers' batch
        statistics never enter the running averages (measurements: bench/RESULTS.md).
      target_retention: Stop early once accuracy on D reaches this (0 disables).
    """

    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 64
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    freeze_bn_stats: bool = True
    target_retention: float = 0.0


def _training_set(images, labels, clean_images, clean_labels, clean_per_trigger, key):
    if not clean_per_trigger:
        return np.asarray(images), np.asarray(labels)
    if clean_images is None or clean_labels is None:
        raise ValueError("clean_per_trigger > 0 needs clean_images and clean_labels")
    n = min(int(round(clean_per_trigger * len(labels))), len(clean_labels))
    idx = np.asarray(jax.random.choice(key, len(clean_labels), (n,), replace=False))
    return (
        np.concatenate([np.asarray(images), np.asarray(clean_images)[idx]]),
        np.concatenate([np.asarray(labels), np.asarray(clean_labels)[idx]]).astype(np.int32),
    )


def embed(
    apply_fn: Callable[..., tuple[jax.Array, PyTree]],
    params: PyTree,
    state: PyTree,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    trainable_per_epoch: Sequence[Sequence[str] | None],
    settings: EmbedSettings,
    mean: Sequence[float],
    std: Sequence[float],
    key: jax.Array,
    clean_images: np.ndarray | None = None,
    clean_labels: np.ndarray | None = None,
    clean_per_trigger: float = 0.0,
    on_epoch: Callable[[dict, PyTree, PyTree], None] | None = None,
) -> tuple[PyTree, PyTree, list[dict]]:
    """The shared embedding loop: per epoch, a fresh optimizer over that epoch's trainable set.

    Args:
      apply_fn: Model apply (contract in :mod:`jaxwm.models`).
      params, state: The model to watermark (e.g. the victim).
      images, labels: The watermark set D (uint8 NHWC, int labels).
      trainable_per_epoch: For each epoch, the path patterns to train, or None for all.
      settings: Optimisation settings.
      mean, std: Input normalisation of the task.
      key: PRNG key for shuffling and the clean sample.
      clean_images, clean_labels, clean_per_trigger: Optionally mix this many clean examples
        per trigger into the training set (0 = the paper: train on D alone).
      on_epoch: Called as ``on_epoch(row, params, state)`` after each epoch (progress output,
        inspection).

    Returns:
      ``(params, state, history)`` with one dict per epoch: stage patterns, loss, retention.
    """
    key = key if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else jax.random.wrap_key_data(key)
    k_clean, k_run = jax.random.split(key)
    x_np, y_np = _training_set(
        images, labels, clean_images, clean_labels, clean_per_trigger, k_clean
    )
    trig_x, trig_y = jnp.asarray(images, jnp.uint8), jnp.asarray(labels, jnp.int32)
    mean_t, std_t = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    evaluate = train.make_eval(apply_fn, mean_t, std_t, min(256, trig_x.shape[0]))
    plan = list(trainable_per_epoch)
    for patterns in dict.fromkeys(tuple(p) for p in plan if p is not None):
        partition.trainable_mask(params, list(patterns))  # logs each stage's match table once

    history: list[dict] = []

    def after_epoch(epoch, p, s, metrics):
        patterns = plan[epoch - 1]
        row = {
            "epoch": epoch,
            "trainable": list(patterns) if patterns is not None else ["<all>"],
            "loss": float(metrics["loss_sum"] / metrics["count"]),
            "retention": float(evaluate(p, s, trig_x, trig_y)),
        }
        history.append(row)
        log.info("embed epoch %d: %s", epoch, row)
        if on_epoch is not None:
            on_epoch(row, p, s)
        done = bool(settings.target_retention) and row["retention"] >= settings.target_retention
        if done:
            log.info("target retention %.3f reached at epoch %d", row["retention"], epoch)
        return done

    # Algorithm 1 resets the optimizer every epoch; each stage compiles once (and the compiled
    # epochs are cached across calls: another key, set or model of the same shapes reuses them).
    out = train_epochs(
        apply_fn, params, state, x_np, y_np,
        mean=mean_t, std=std_t, key=k_run, epochs=len(plan), lr=settings.lr,
        batch_size=settings.batch_size, plan=lambda e: plan[e], reset_each_epoch=True,
        snapshots=[len(plan)], optimizer=settings.optimizer, schedule="constant",
        weight_decay=settings.weight_decay, freeze_state=settings.freeze_bn_stats, wrap=True,
        on_epoch=after_epoch,
    )  # fmt: skip
    params, state = out[-1]
    return params, state, history


def partitioned_embed(
    apply_fn: Callable[..., tuple[jax.Array, PyTree]],
    params: PyTree,
    state: PyTree,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    layers_to_turn: Sequence[str],
    settings: EmbedSettings = EmbedSettings(),
    **kwargs: Any,
) -> tuple[PyTree, PyTree, list[dict]]:
    """Algorithm 1: progressive, reversed unfreezing of ``layers_to_turn`` while training on D.

    Args:
      apply_fn, params, state, images, labels: As in :func:`embed`.
      layers_to_turn: Path patterns of the watermark layers, in network order (e.g.
        ``["layer3", "layer4", "head"]``); the last one is unfrozen first.
      settings: Optimisation settings.
      **kwargs: ``mean``, ``std``, ``key`` and the optional arguments of :func:`embed`.

    Returns:
      ``(params, state, history)``.
    """
    if not layers_to_turn:
        raise ValueError("layers_to_turn is empty: name at least one layer pattern, e.g. 'head'")
    schedule = unfrozen_per_epoch(list(layers_to_turn), settings.epochs)
    return embed(
        apply_fn, params, state, images, labels,
        trainable_per_epoch=schedule, settings=settings, **kwargs,
    )  # fmt: skip


def baseline_embed(
    apply_fn: Callable[..., tuple[jax.Array, PyTree]],
    params: PyTree,
    state: PyTree,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    settings: EmbedSettings = EmbedSettings(),
    **kwargs: Any,
) -> tuple[PyTree, PyTree, list[dict]]:
    """The paper's baseline: the same loop with every parameter trainable from the first epoch."""
    return embed(
        apply_fn, params, state, images, labels,
        trainable_per_epoch=[None] * settings.epochs, settings=settings, **kwargs,
    )  # fmt: skip


def embed_many(
    apply_fn: Callable[..., tuple[jax.Array, PyTree]],
    params: PyTree,
    state: PyTree,
    sets: Sequence[tuple[np.ndarray, np.ndarray, Sequence[str]]],
    *,
    settings: EmbedSettings = EmbedSettings(),
    key: jax.Array,
    **kwargs: Any,
) -> tuple[PyTree, PyTree, list[list[dict]]]:
    """Embeds several watermark sets one after another, each into its own layers (Algorithm 1, step 4).

    Args:
      sets: ``(images, labels, layers_to_turn)`` per watermark set, in embedding order.
      key: One key; set ``i`` uses ``fold_in(key, i)``.

    Returns:
      ``(params, state, histories)``.
    """
    histories = []
    for i, (images, labels, layers) in enumerate(sets):
        params, state, h = partitioned_embed(
            apply_fn, params, state, images, labels,
            layers_to_turn=layers, settings=settings, key=jax.random.fold_in(key, i), **kwargs,
        )  # fmt: skip
        histories.append(h)
    return params, state, histories


def with_triggers(
    images: np.ndarray,
    labels: np.ndarray,
    trigger_sets: Sequence[tuple[np.ndarray, np.ndarray]],
    repeat: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Training data with the trigger sets mixed in, for Adi et al. 2018-style embedding.

    Adi et al. embed the watermark by training from scratch on the clean data plus the
    trigger set; repeating the triggers ``repeat`` times keeps them in most batches of a large
    dataset. The result is shuffled by the training loop.

    Returns:
      ``(images, labels)``: the clean examples followed by each set repeated ``repeat`` times.
    """
    if repeat < 1:
        raise ValueError(f"embed.adi_repeat must be >= 1, got {repeat}")
    xs = [np.asarray(images)] + [np.asarray(x) for x, _ in trigger_sets for _ in range(repeat)]
    ys = [np.asarray(labels)] + [np.asarray(y) for _, y in trigger_sets for _ in range(repeat)]
    return np.concatenate(xs).astype(np.uint8), np.concatenate(ys).astype(np.int32)
