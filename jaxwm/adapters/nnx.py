"""A Flax NNX network as a jaxwm :class:`~jaxwm.models.Model`.

NNX modules are Python objects holding their arrays; jaxwm's algorithms want pure functions
over pytrees. :func:`from_nnx` splits the module once (``nnx.split(module, nnx.Param, ...)``)
into a graph definition and two plain nested dicts, ``params`` (the ``nnx.Param`` variables)
and ``state`` (every other variable: BatchNorm statistics, ...), and every call merges a
*fresh* module from the arrays it is given. Merging the ``State`` objects that ``split``
returned instead would reuse Variables created outside the trace, and BatchNorm's update under
``jit`` then fails with ``TraceContextError``.

Example (the README's, run by tests/test_adapters.py)::

    adapted = from_nnx(net, prune_layers=["conv1"])
    params, state, _ = embed.partitioned_embed(adapted.model.apply, adapted.params,
                                               adapted.state, ...)
    net = adapted.rebuild(params, state)  # an NNX module again
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from jaxwm.adapters.common import Adapted, PruneLayers, find, first_outputs, prunable_table
from jaxwm.errors import ModelError
from jaxwm.models import Model

PyTree = Any


def _split(module: nnx.Module) -> tuple[Any, PyTree, PyTree]:
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(rest)


def from_nnx(
    module: nnx.Module,
    *,
    init: Callable[[jax.Array], nnx.Module] | None = None,
    prune_layers: PruneLayers = (),
    name: str | None = None,
) -> Adapted:
    """Wraps an NNX module (its current weights are ``params`` and ``state``).

    Training mode is the module's own switch: ``train=True`` calls ``module.train()`` (BatchNorm
    uses batch statistics, Dropout is active) and the submodules named in the ``frozen`` hint
    then get ``.eval()``, so frozen layers compute what they compute at test time; otherwise
    ``module.eval()``. A module with Dropout keeps its ``nnx.Rngs`` in ``state``.

    Args:
      module: The NNX module; it maps float NHWC images to logits. Not modified.
      init: ``init(key) -> a freshly initialised module`` of the same architecture (e.g.
        ``lambda key: Net(rngs=nnx.Rngs(key))``), for the attacks that re-initialise layers
        (RTLL/RTAL). Without it, ``model.init`` raises :class:`~jaxwm.errors.ModelError`.
      prune_layers: Layer paths (``"conv1"``, ``"layers/0"``) whose output channels
        activation-frequency pruning may remove, or a full table (:mod:`jaxwm.adapters.common`).
      name: Description for logs (default: the class name).

    Returns:
      The :class:`~jaxwm.adapters.common.Adapted` network; ``rebuild(params, state)`` returns
      a new NNX module.

    Raises:
      ModelError: an unknown prune layer.

    Example:
      >>> adapted = from_nnx(Net(rngs=nnx.Rngs(0)), prune_layers=["conv1"])
      >>> logits, _ = adapted.model.apply(adapted.params, adapted.state, x)
    """
    graphdef, params, state = _split(module)
    table = prunable_table(params, prune_layers, {"kernel": -1, "bias": 0, "scale": 0})
    layers = tuple(table)

    def merged(params: PyTree, state: PyTree) -> nnx.Module:
        # New Variables around this call's (possibly traced) arrays: see the module docstring.
        return nnx.merge(graphdef, params, state)

    def init_fn(key: jax.Array, sample: jax.Array) -> tuple[PyTree, PyTree]:
        del sample  # an NNX module is built with its shapes
        if init is None:
            raise ModelError(
                "from_nnx: re-initialising layers needs init=, a function key -> fresh module, "
                "e.g. from_nnx(net, init=lambda key: Net(rngs=nnx.Rngs(key)))"
            )
        _, p, s = _split(init(key))
        return p, s

    def apply(
        params: PyTree,
        state: PyTree,
        images: jax.Array,
        *,
        train: bool = False,
        frozen: tuple[str, ...] = (),
    ) -> tuple[jax.Array, PyTree]:
        m = merged(params, state)
        if not train or "" in frozen:
            m.eval()
        else:
            m.train()
            for path in frozen:
                sub = find(m, path)
                if isinstance(sub, nnx.Module):
                    sub.eval()
        logits = m(images)
        if not train:
            return logits, state
        return logits, nnx.to_pure_dict(nnx.state(m, nnx.Not(nnx.Param)))

    def activations(
        params: PyTree, state: PyTree, images: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        m = merged(params, state)
        m.eval()
        if not layers:
            return m(images), {}
        # nnx.capture records every method's outputs; XLA drops the ones not returned.
        logits, captured = nnx.capture(m, nnx.Intermediate, method_outputs=nnx.Intermediate)(images)
        return logits, first_outputs(nnx.to_pure_dict(captured), layers)

    def rebuild(params: PyTree, state: PyTree) -> nnx.Module:
        return nnx.merge(graphdef, params, state)

    model = Model(init_fn, apply, activations, table, name or f"NNX {type(module).__name__}")
    return Adapted(model, params, state, rebuild)
