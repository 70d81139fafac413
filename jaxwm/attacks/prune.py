"""Structured pruning attacks: activation-frequency pruning and fine-pruning.

* Activation-frequency pruning removes the channels that fire least often on the attacker's
  clean data -- the attack of the paper's Figure 3, and the first half of fine-pruning (Liu et al.
  2018), whose premise is that backdoor/watermark behaviour hides in units dormant on clean data.
* Unstructured magnitude pruning and :func:`~jaxwm.attacks.magnitude.apply_mask` are in
  :mod:`jaxwm.attacks.magnitude`.
* :func:`fine_prune` prunes by activation frequency and then fine-tunes with the pruned entries
  held at exactly zero.

Masks are host-side numpy bool arrays (True = keep): they are decisions, not computations, and
numpy keeps tie-breaking exact and deterministic.

Example:
  >>> freqs = activation_frequency(model.activations, params, state, x, mean=m, std=sd)
  >>> keep = frequency_keep_masks(freqs, 0.3)
  >>> pruned = apply_mask(params, channel_masks_to_param_mask(keep, model.prunable, params))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxwm.attacks.finetune import finetune
from jaxwm.attacks.magnitude import apply_mask, prune_count
from jaxwm.engine import compiled, partition, train
from jaxwm.engine.epochs import ApplyFn, ParamsState
from jaxwm.errors import ConfigError

PyTree = Any
ActivationsFn = Callable[[PyTree, PyTree, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
Prunable = Mapping[str, Sequence[tuple[str, int]]]


@compiled.cached
def _batch_counts(activations_fn: ActivationsFn, mean: tuple, std: tuple) -> Callable:
    """Jitted ``(params, state, images_u8, valid) -> {name: (active (C,), positions, sum (C,))}``."""

    def counts(params, state, images, valid):
        _, acts = activations_fn(params, state, train.normalize(images, mean, std))
        out = {}
        for name, a in acts.items():
            rows = valid.reshape((-1,) + (1,) * (a.ndim - 1))
            axes = tuple(range(a.ndim - 1))  # every axis but channels: examples x positions
            active = jnp.sum((a > 0) & rows, axis=axes, dtype=jnp.int32)
            positions = jnp.sum(valid, dtype=jnp.int32) * math.prod(a.shape[1:-1])
            total = jnp.sum(jnp.where(rows, a.astype(jnp.float32), 0.0), axis=axes)
            out[name] = (active, positions, total)
        return out

    return jax.jit(counts)


def activation_frequency(
    activations_fn: ActivationsFn,
    params: PyTree,
    state: PyTree,
    images: Any,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """Per channel, the fraction of (example, position) pairs where the activation is > 0.

    Args:
      activations_fn: ``activations(params, state, images) -> (logits, {name: act})`` in
        inference mode; activations are channels-last, e.g. NHWC or NC.
      params, state: The model.
      images: uint8 NHWC attacker images.
      mean, std: Per-channel normalisation.
      batch_size: Images per jitted call; the last batch is zero-padded and its padding masked,
        so every call has one shape (one compilation).

    Returns:
      ``{name: float32 (C,)}`` frequencies in [0, 1].

    Example:
      >>> f = activation_frequency(model.activations, params, state, x, mean=m, std=sd)
      >>> f["layer1/block0"].shape
      (64,)
    """
    parts = _stats(activations_fn, params, state, images, mean, std, batch_size)
    freqs = {}
    for name in parts[0]:
        active = sum(p[name][0].astype(np.int64) for p in parts)  # int64: no overflow on big sets
        positions = sum(int(p[name][1]) for p in parts)
        freqs[name] = (active / positions).astype(np.float32)
    return freqs


def mean_activation(
    activations_fn: ActivationsFn,
    params: PyTree,
    state: PyTree,
    images: Any,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """Per channel, the mean activation over (example, position) pairs: Liu et al.'s ranking.

    Args:
      activations_fn, params, state, images, mean, std, batch_size: As in
        :func:`activation_frequency`.

    Returns:
      ``{name: float32 (C,)}`` mean (post-ReLU, so non-negative) activations.

    Example:
      >>> m = mean_activation(model.activations, params, state, x, mean=m, std=sd)
    """
    parts = _stats(activations_fn, params, state, images, mean, std, batch_size)
    out = {}
    for name in parts[0]:
        total = sum(p[name][2].astype(np.float64) for p in parts)
        positions = sum(int(p[name][1]) for p in parts)
        out[name] = (total / positions).astype(np.float32)
    return out


def _stats(activations_fn, params, state, images, mean, std, batch_size) -> list[dict]:
    """The per-batch ``(active, positions, sum)`` of every activation, fetched to the host."""
    images = np.asarray(images, np.uint8)
    n = images.shape[0]
    if n == 0:
        raise ValueError("activation statistics need at least one image")
    bs = min(batch_size, n)
    nb = -(-n // bs)
    padded = np.zeros((nb * bs, *images.shape[1:]), np.uint8)
    padded[:n] = images
    valid = np.arange(nb * bs) < n
    fn = _batch_counts(activations_fn, tuple(map(float, mean)), tuple(map(float, std)))
    # Dispatch every batch first and fetch once: no host sync between batches.
    parts = [
        fn(params, state, padded[i * bs : (i + 1) * bs], valid[i * bs : (i + 1) * bs])
        for i in range(nb)
    ]
    return jax.device_get(parts)


SCOPES = ("block", "all", "penultimate")
RANKINGS = ("global", "layer")


def scope_units(
    scope: str, prunable: Prunable, unit_scopes: Mapping[str, str] | None = None
) -> list[str]:
    """The units activation-frequency pruning may remove, for a pruning scope.

    * ``"block"`` -- the block-internal activations of ``prunable`` (the paper's attack and
      jaxwm's default): the residual stream, the stem and the penultimate features stay whole.
    * ``"all"`` -- every convolution output the model exposes: the block-internal units and the
      residual-stream channels (with the stem, which feeds the first stage's stream).
    * ``"penultimate"`` -- only the penultimate features (the classifier's inputs).

    Args:
      scope: One of :data:`SCOPES`.
      prunable: The model's block-internal table (:attr:`jaxwm.models.Model.prunable`).
      unit_scopes: ``{unit: "block" | "stream" | "penultimate"}``
        (:attr:`jaxwm.models.Model.unit_scopes`), None when the model exposes no more units.

    Returns:
      Unit names, in table order; measure them with the model's ``units`` function and turn
      masks into parameter masks with its ``unit_prunable`` table (or ``activations`` /
      ``prunable`` for ``"block"``).

    Raises:
      ConfigError: for an unknown scope, or one the model does not expose.

    Example:
      >>> scope_units("penultimate", model.prunable, model.unit_scopes)
      ['features']
    """
    if scope not in SCOPES:
        raise ConfigError(f"attack.prune_scope must be one of {SCOPES}, got {scope!r}")
    if scope == "block":
        return list(prunable)
    if not unit_scopes:
        raise ConfigError(
            f"attack.prune_scope={scope!r} needs a model that exposes its residual stream and "
            "penultimate features (jaxwm.models.resnet does; adapters expose only block units); "
            "use attack.prune_scope='block'"
        )
    want = ("block", "stream") if scope == "all" else ("penultimate",)
    return [k for k, v in unit_scopes.items() if v in want]


def frequency_keep_masks(
    freqs: Mapping[str, Any], ratio: float, *, scope: str = "global", min_keep: int = 1
) -> dict[str, np.ndarray]:
    """Chooses the least frequently active channels to prune.

    ``floor(ratio * channels)`` channels are pruned (counted over all layers for
    ``scope="global"``, per layer for ``"layer"``), lowest frequency first. Ties are broken by
    layer name, then channel index, so the choice is deterministic and nested: a larger ratio
    prunes a superset. Every layer keeps at least ``min_keep`` channels (its most active
    ones) in both scopes, because a layer with no channel left disconnects a plain network;
    the global count is met by pruning further channels elsewhere, up to that floor.

    Args:
      freqs: ``{name: (C,)}`` activation frequencies (see :func:`activation_frequency`).
      ratio: Fraction of channels to prune, in [0, 1]; 0 keeps everything.
      scope: "global" (one ranking over all layers) or "layer" (the ratio within each layer).
      min_keep: Channels every layer keeps (0 allows emptying a layer).

    Returns:
      ``{name: bool (C,)}``, True = keep.

    Example:
      >>> frequency_keep_masks({"a": np.array([0.9, 0.1]), "b": np.array([0.5])}, 0.5,
      ...                      min_keep=0)
      {'a': array([ True, False]), 'b': array([ True])}
    """
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    if min_keep < 0:
        raise ValueError(f"min_keep must be >= 0, got {min_keep}")
    names = sorted(freqs)
    f = [np.asarray(freqs[k], np.float64).reshape(-1) for k in names]
    keep = {k: np.ones(len(v), bool) for k, v in zip(names, f, strict=True)}
    caps = [max(len(v) - min_keep, 0) for v in f]
    if scope == "layer":
        for k, v, cap in zip(names, f, caps, strict=True):
            order = np.argsort(v, kind="stable")  # stable: equal frequencies, lower index first
            keep[k][order[: min(prune_count(ratio, len(v)), cap)]] = False
        return keep
    total = sum(len(v) for v in f)
    target = prune_count(ratio, total)
    layer = np.concatenate([np.full(len(v), i) for i, v in enumerate(f)])
    chan = np.concatenate([np.arange(len(v)) for v in f])
    allf = np.concatenate(f)
    pruned = [0] * len(f)
    done = 0
    for j in np.lexsort((chan, layer, allf)):  # by frequency, then layer, then channel
        if done == target:
            break
        i = int(layer[j])
        if pruned[i] < caps[i]:
            keep[names[i]][chan[j]] = False
            pruned[i] += 1
            done += 1
    return keep


def channel_masks_to_param_mask(
    keep: Mapping[str, Any], prunable: Prunable, params: PyTree
) -> PyTree:
    """Turns channel masks into a parameter mask via the model's ``prunable`` table.

    Args:
      keep: ``{activation name: bool (C,)}``, True = keep (names are keys of ``prunable``).
      prunable: ``{name: ((param path, channel axis), ...)}`` (see :class:`jaxwm.models.Model`).
      params: The parameters, for structure and shapes.

    Returns:
      Numpy bool pytree like ``params`` (True = keep); leaves not listed are all True.

    Example:
      >>> mask = channel_masks_to_param_mask({"layer1/block0": keep}, model.prunable, params)
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    index = {partition.path_str(kp): i for i, (kp, _) in enumerate(leaves)}
    masks = [np.ones(np.shape(leaf), bool) for _, leaf in leaves]
    for name, k in keep.items():
        if name not in prunable:
            raise KeyError(f"{name!r} is not in the prunable table; known: {sorted(prunable)}")
        k = np.asarray(k, bool).reshape(-1)
        for path, axis in prunable[name]:
            if path not in index:
                raise KeyError(f"prunable[{name!r}] names {path!r}, which is not a parameter")
            i = index[path]
            shape = [1] * masks[i].ndim
            if masks[i].shape[axis] != k.size:
                raise ValueError(
                    f"{path} has {masks[i].shape[axis]} channels on axis {axis}, "
                    f"the mask for {name!r} has {k.size}"
                )
            shape[axis] = k.size
            masks[i] = masks[i] & k.reshape(shape)
    return jax.tree_util.tree_unflatten(treedef, masks)


def frequency_prune(
    activations_fn: ActivationsFn,
    prunable: Prunable,
    params: PyTree,
    state: PyTree,
    images: Any,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    ratio: float,
    scope: str = "global",
    layers: Sequence[str] | None = None,
    min_keep: int = 1,
) -> tuple[PyTree, PyTree]:
    """Activation-frequency pruning without retraining (the paper's Figure 3 attack).

    Args:
      activations_fn, params, state, images, mean, std: See :func:`activation_frequency`.
      prunable: The model's channel -> parameter table.
      ratio, scope, min_keep: See :func:`frequency_keep_masks`.
      layers: Activation names that may be pruned (default: all of ``prunable``); Liu et al.
        prune only the last convolutional layer.

    Returns:
      ``(pruned params, param mask)``.

    Example:
      >>> p, mask = frequency_prune(model.activations, model.prunable, params, state, x,
      ...                           mean=m, std=sd, ratio=0.5)
    """
    freqs = activation_frequency(activations_fn, params, state, images, mean=mean, std=std)
    names = list(prunable) if layers is None else list(layers)
    missing = [k for k in names if k not in freqs]
    if missing:
        raise KeyError(f"no activation named {missing}; known: {sorted(freqs)}")
    keep = frequency_keep_masks({k: freqs[k] for k in names}, ratio, scope=scope, min_keep=min_keep)
    mask = channel_masks_to_param_mask(keep, prunable, params)
    return apply_mask(params, mask), mask


def fine_prune(
    apply_fn: ApplyFn,
    activations_fn: ActivationsFn,
    prunable: Prunable,
    params: PyTree,
    state: PyTree,
    images: Any,
    labels: Any,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    key: jax.Array,
    ratio: float,
    epochs: int,
    lr: float,
    scope: str = "global",
    layers: Sequence[str] | None = None,
    min_keep: int = 1,
    **finetune_kwargs: Any,
) -> ParamsState:
    """Fine-pruning (Liu et al. 2018): frequency-prune, then fine-tune the pruned model.

    The pruned entries stay exactly zero during fine-tuning: their optimizer updates are masked
    (not just re-zeroed at the end), so the network trains as the pruned network it ends up as.

    Args:
      apply_fn: Model apply.
      activations_fn, prunable, params, state, images, mean, std, ratio, scope, layers,
        min_keep: See :func:`frequency_prune`.
      labels: int32 labels of the attacker images (for the fine-tuning).
      key, epochs, lr: See :func:`jaxwm.attacks.finetune.finetune` (``epochs=0``: prune only).
      **finetune_kwargs: Other keyword arguments of :func:`~jaxwm.attacks.finetune.finetune`.

    Returns:
      ``(params, state)`` of the attacked model.

    Example:
      >>> p, s = fine_prune(model.apply, model.activations, model.prunable, params, state, x, y,
      ...                   mean=m, std=sd, key=jax.random.key(0), ratio=0.5, epochs=2, lr=0.01)
    """
    _, mask = frequency_prune(
        activations_fn,
        prunable,
        params,
        state,
        images,
        mean=mean,
        std=std,
        ratio=ratio,
        scope=scope,
        layers=layers,
        min_keep=min_keep,
    )
    return finetune(
        apply_fn,
        params,
        state,
        images,
        labels,
        mean=mean,
        std=std,
        key=key,
        epochs=epochs,
        lr=lr,
        prune_keep=mask,
        **finetune_kwargs,
    )
