"""An Equinox network as a jaxwm :class:`~jaxwm.models.Model`.

``params`` are the module's inexact arrays (``eqx.filter(module, eqx.is_inexact_array)``, an
Equinox module whose other leaves are None); everything else is static. Parameter paths are the
attribute names: ``conv1/weight``, ``layers/0/bias``. The module sees one example at a time
(``jax.vmap`` over the batch), as Equinox layers expect: ``layout="CHW"`` (default, the layout
of ``eqx.nn.Conv2d``) transposes each NHWC image to CHW, ``"HWC"`` passes it as is.

Only stateless modules are supported (no ``eqx.nn.State``: no BatchNorm) and no dropout key
is passed, so training mode and the ``frozen`` hint do not change the function; ``state`` is
``{}``.

This module imports Equinox (``pip install 'jaxwm[equinox]'``); ``import jaxwm`` does not.

Example (the README's, run by tests/test_adapters.py)::

    adapted = from_equinox(net, prune_layers=["conv1"])
    params, state, _ = embed.partitioned_embed(adapted.model.apply, adapted.params,
                                               adapted.state, ...)
    net = adapted.rebuild(params, state)  # an Equinox module again
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from jaxwm.adapters.common import Adapted, PruneLayers, find, prunable_table
from jaxwm.errors import ModelError
from jaxwm.models import Model

PyTree = Any
LAYOUTS = ("CHW", "HWC")


class _Tap:
    """Stands in for a layer during :func:`activations`: calls it and records its output."""

    def __init__(self, layer: Callable, name: str, store: dict):
        self.layer, self.name, self.store = layer, name, store

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        y = self.layer(x, *args, **kwargs)
        self.store.setdefault(self.name, y)  # the first call, as for Flax
        return y


def from_equinox(
    module: eqx.Module,
    *,
    layout: str = "CHW",
    init: Callable[[jax.Array], eqx.Module] | None = None,
    prune_layers: PruneLayers = (),
    name: str | None = None,
) -> Adapted:
    """Wraps a stateless Equinox module that maps one image to logits.

    Args:
      module: The module; called as ``module(image)`` on one example.
      layout: ``"CHW"`` (each NHWC image is transposed to channels first) or ``"HWC"``.
      init: ``init(key) -> a freshly initialised module`` of the same architecture, for the
        attacks that re-initialise layers (RTLL/RTAL). Without it, ``model.init`` raises
        :class:`~jaxwm.errors.ModelError`.
      prune_layers: Paths of layers (``"conv1"``, ``"layers/0"``: ``eqx.nn.Conv``/``Linear``,
        whose output channels are ``weight[c]`` and ``bias[c]``) that activation-frequency
        pruning may remove, or a full table (:mod:`jaxwm.adapters.common`). Each must be
        called by the module as ``layer(x, ...)``; its output's channels are moved last.
      name: Description for logs (default: the class name).

    Returns:
      The :class:`~jaxwm.adapters.common.Adapted` network; ``rebuild(params, state)`` returns
      ``eqx.combine(params, static)``, an Equinox module.

    Raises:
      ModelError: an unknown layout or prune layer.

    Example:
      >>> adapted = from_equinox(Net(jax.random.key(0)), prune_layers=["conv1"])
      >>> logits, _ = adapted.model.apply(adapted.params, adapted.state, x_nhwc)
    """
    if layout not in LAYOUTS:
        raise ModelError(f"from_equinox: layout must be one of {LAYOUTS}, got {layout!r}")
    params, static = eqx.partition(module, eqx.is_inexact_array)
    table = prunable_table(params, prune_layers, {"weight": 0, "bias": 0})
    layers = tuple(table)

    def image(x: jax.Array) -> jax.Array:
        return jnp.transpose(x, (2, 0, 1)) if layout == "CHW" else x

    def channels_last(a: jax.Array) -> jax.Array:
        return jnp.moveaxis(a, 0, -1) if layout == "CHW" and a.ndim >= 2 else a

    def init_fn(key: jax.Array, sample: jax.Array) -> tuple[PyTree, PyTree]:
        del sample  # an Equinox module is built with its shapes
        if init is None:
            raise ModelError(
                "from_equinox: re-initialising layers needs init=, a function key -> fresh "
                "module, e.g. from_equinox(net, init=lambda key: Net(key))"
            )
        return eqx.filter(init(key), eqx.is_inexact_array), {}

    def apply(
        params: PyTree,
        state: PyTree,
        images: jax.Array,
        *,
        train: bool = False,
        frozen: tuple[str, ...] = (),
    ) -> tuple[jax.Array, PyTree]:
        del train, frozen  # a stateless module computes the same function in both modes
        m = eqx.combine(params, static)
        return jax.vmap(lambda x: m(image(x)))(images), state

    def activations(
        params: PyTree, state: PyTree, images: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        m = eqx.combine(params, static)

        def one(x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
            # Equinox has no hooks: swap each named layer for a recording stand-in, in a copy
            # made for this trace (the store must not outlive it: its values are tracers).
            store: dict[str, jax.Array] = {}
            tapped = m
            for layer in layers:
                tapped = eqx.tree_at(
                    lambda t, layer=layer: find(t, layer),
                    tapped,
                    replace_fn=lambda sub, layer=layer: _Tap(sub, layer, store),
                )
            logits = tapped(image(x))
            missing = [layer for layer in layers if layer not in store]
            if missing:
                raise ModelError(f"prune_layers: {missing} not called by the forward pass")
            return logits, {k: channels_last(v) for k, v in store.items()}

        return jax.vmap(one)(images)

    def rebuild(params: PyTree, state: PyTree) -> eqx.Module:
        del state
        return eqx.combine(params, static)

    model = Model(init_fn, apply, activations, table, name or f"Equinox {type(module).__name__}")
    return Adapted(model, params, {}, rebuild)
