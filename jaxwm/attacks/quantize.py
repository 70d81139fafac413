"""Weight-perturbation attacks: post-training quantization and Gaussian weight noise.

Quantization is one of the Watermark-Robustness-Toolbox attacks (Lukas et al. 2022): the
attacker ships a low-precision copy, hoping the watermark lives in low-order bits. Here the
weights are quantized and immediately dequantized, so the attacked model runs with the same
``apply`` and its accuracy shows the effect of the precision loss.

Example:
  >>> q = quantize(params, 4)               # 4-bit, per output channel
  >>> noisy = gaussian_noise(params, jax.random.key(0), 0.1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxwm.attacks._common import Predicate, select
from jaxwm.engine import compiled

PyTree = Any
MAX_BITS = 16


def _quantize_leaf(w: jax.Array, qmax: jax.Array, per_channel: bool) -> jax.Array:
    x = jnp.asarray(w, jnp.float32)
    axes = tuple(range(x.ndim - 1)) if per_channel and x.ndim > 1 else None
    amax = jnp.max(jnp.abs(x), axis=axes, keepdims=True)
    scale = amax / qmax
    # An all-zero channel has scale 0; dividing by 1 instead leaves its zeros unchanged.
    safe = jnp.where(scale > 0, scale, 1.0)
    q = jnp.clip(jnp.round(x / safe), -qmax, qmax)
    return (q * safe).astype(w.dtype)


@compiled.cached
def _quantize_program(per_channel: bool):
    """Every selected leaf in one jitted call; the level count is an argument, so one
    compilation serves every bit width (op by op, each leaf shape compiled each op)."""

    def run(leaves: list[jax.Array], qmax: jax.Array) -> list[jax.Array]:
        return [_quantize_leaf(w, qmax, per_channel) for w in leaves]

    return jax.jit(run)


@compiled.cached
def _noise_program(relative: bool):
    """Gaussian noise on every selected leaf in one jitted call, ``sigma`` an argument.

    The normal draws are one vmapped sampler over the leaves' keys, each the length of the
    largest leaf and cut to its leaf: counter-based bits make that prefix the same numbers as a
    draw of the leaf's own shape, and one sampler compiles once where one per leaf shape cost
    a compilation each (the slowest programs of an attack run on CPU).
    """

    def run(leaves: list[jax.Array], index: tuple[int, ...], key: jax.Array, sigma: jax.Array):
        longest = max(w.size for w in leaves)
        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.asarray(index))
        draws = jax.vmap(lambda k: jax.random.normal(k, (longest,), jnp.float32))(keys)
        out = []
        for row, w in enumerate(leaves):
            x = jnp.asarray(w, jnp.float32)
            sd = sigma * jnp.std(x) if relative else sigma
            noise = draws[row, : x.size].reshape(x.shape)
            out.append((x + sd * noise).astype(w.dtype))
        return out

    return jax.jit(run, static_argnums=1)


def quantize(
    params: PyTree,
    bits: int,
    *,
    per_channel: bool = True,
    patterns: Sequence[str] | None = None,
    predicate: Predicate | None = None,
) -> PyTree:
    """Uniform symmetric quantization followed by dequantization.

    Each selected tensor (or each output channel, the last axis, with ``per_channel``) gets
    ``scale = max|w| / (2**(bits-1) - 1)``; values become ``round(w / scale) * scale``, so the
    error per element is at most ``scale / 2``.

    Args:
      params: Parameter pytree.
      bits: Bit width, an integer in ``[2, 16]``.
      per_channel: One scale per output channel (last axis of a kernel: HWIO convolutions,
        (in, out) dense layers); otherwise one per tensor. 1-D leaves always use one scale.
      patterns: Path patterns of the leaves to quantize (wins over ``predicate``).
      predicate: ``predicate(path, leaf) -> bool``; default: kernels (``ndim > 1``), as
        quantizers usually keep biases and normalisation parameters in full precision.

    Returns:
      Parameters of the same structure and dtypes; unselected leaves are returned as they are.

    Example:
      >>> q = quantize(params, 8)
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an integer in [2, {MAX_BITS}], got {bits!r}")
    sel, treedef = jax.tree.flatten(select(params, patterns, predicate))
    leaves = treedef.flatten_up_to(params)
    # The level count is a float32 argument: the same value a Python int constant becomes.
    qmax = jnp.float32(2 ** (bits - 1) - 1)  # symmetric: -qmax..qmax, zero exactly representable
    pairs = list(zip(sel, leaves, strict=True))
    done = iter(_quantize_program(per_channel)([w for s, w in pairs if s], qmax))
    return jax.tree.unflatten(treedef, [next(done) if s else w for s, w in pairs])


def gaussian_noise(
    params: PyTree,
    key: jax.Array,
    sigma: float,
    *,
    relative: bool = True,
    patterns: Sequence[str] | None = None,
    predicate: Predicate | None = None,
) -> PyTree:
    """Adds i.i.d. Gaussian noise to the selected weights.

    Args:
      params: Parameter pytree.
      key: PRNG key; leaf ``i`` (in ``jax.tree.leaves`` order) uses ``fold_in(key, i)``, so the
        result is deterministic per key and does not depend on which other leaves are selected.
      sigma: Noise standard deviation; with ``relative`` it is a multiple of each leaf's own
        standard deviation (layers of very different scale are perturbed alike).
      relative: See ``sigma``. A constant leaf (std 0) then receives no noise.
      patterns, predicate: Leaf selection as in :func:`quantize`.

    Returns:
      Noisy parameters (same structure and dtypes).

    Example:
      >>> noisy = gaussian_noise(params, jax.random.key(0), 0.05)
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    sel, treedef = jax.tree.flatten(select(params, patterns, predicate))
    leaves = treedef.flatten_up_to(params)
    index = tuple(i for i, s in enumerate(sel) if s)  # leaf i's noise comes from fold_in(key, i)
    if not index:
        return params
    noisy = _noise_program(relative)([leaves[i] for i in index], index, key, jnp.float32(sigma))
    out = dict(zip(index, noisy, strict=True))
    return jax.tree.unflatten(treedef, [out.get(i, w) for i, w in enumerate(leaves)])
