"""A Flax Linen network as a jaxwm :class:`~jaxwm.models.Model`.

Example (the README's, run by tests/test_adapters.py)::

    adapted = from_linen(net, net.init(jax.random.key(0), x), prune_layers=["conv1"])
    params, state, _ = embed.partitioned_embed(adapted.model.apply, adapted.params,
                                               adapted.state, ...)
    variables = adapted.rebuild(params, state)  # {"params": ..., "batch_stats": ...}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax

from jaxwm.adapters.common import Adapted, PruneLayers, first_outputs, prunable_table
from jaxwm.errors import ModelError
from jaxwm.models import Model

PyTree = Any


def from_linen(
    module: nn.Module,
    variables: Mapping[str, Any],
    *,
    train_arg: str | None = None,
    prune_layers: PruneLayers = (),
    name: str | None = None,
) -> Adapted:
    """Wraps a Linen module and its variables.

    ``params`` are ``variables["params"]``; ``state`` is the one other collection if there is
    one (``batch_stats``), whose paths are the module paths, so the training code can restore
    the statistics of frozen layers. Linen modules take no ``frozen`` hint, except that when
    every layer is frozen (embedding with ``bn_mode="inference"``) the module runs in
    inference mode.

    Args:
      module: The Linen module; it maps float NHWC images to logits.
      variables: Its variables (``module.init(...)`` or trained ones): ``params`` and at most
        one mutable collection.
      train_arg: Keyword of ``module.__call__`` that switches training mode (e.g. ``"train"``),
        passed ``True`` while training and ``False`` otherwise; None if it has none. A module
        with Dropout must also be deterministic: no ``dropout`` rng is passed.
      prune_layers: Layer paths (``"conv1"``, ``"block/dense"``) whose output channels
        activation-frequency pruning may remove, or a full table (:mod:`jaxwm.adapters.common`).
      name: Description for logs (default: the class name).

    Returns:
      The :class:`~jaxwm.adapters.common.Adapted` network; ``rebuild(params, state)`` returns
      the variables dict.

    Raises:
      ModelError: no ``params`` collection, more than one other collection, or an unknown
        prune layer.

    Example:
      >>> adapted = from_linen(net, net.init(jax.random.key(0), x), prune_layers=["conv1"])
      >>> logits, _ = adapted.model.apply(adapted.params, adapted.state, x)
    """
    variables = dict(variables)
    if "params" not in variables:
        raise ModelError(
            f"from_linen: variables has no 'params' collection (has {sorted(variables)})"
        )
    others = sorted(c for c in variables if c != "params")
    if len(others) > 1:
        raise ModelError(
            f"from_linen: variables has collections {others} besides 'params'; jaxwm keeps one "
            "(e.g. 'batch_stats') as the model state. Drop the others (e.g. 'intermediates')."
        )
    collection = others[0] if others else None
    table = prunable_table(variables["params"], prune_layers, {"kernel": -1, "bias": 0, "scale": 0})
    layers = tuple(table)

    def join(params: PyTree, state: PyTree) -> dict:
        return {"params": params} | ({collection: state} if collection else {})

    def mode(train: bool) -> dict:
        return {train_arg: train} if train_arg else {}

    def init(key: jax.Array, sample: jax.Array) -> tuple[PyTree, PyTree]:
        v = module.init(key, sample, **mode(False))
        return v["params"], (v[collection] if collection else {})

    def apply(
        params: PyTree,
        state: PyTree,
        images: jax.Array,
        *,
        train: bool = False,
        frozen: tuple[str, ...] = (),
    ) -> tuple[jax.Array, PyTree]:
        # Everything frozen: inference mode, so the function trained is the one evaluated.
        train = train and "" not in frozen
        if not train or collection is None:
            return module.apply(join(params, state), images, **mode(train)), state
        logits, mutated = module.apply(
            join(params, state), images, **mode(True), mutable=[collection]
        )
        return logits, mutated[collection]

    def activations(
        params: PyTree, state: PyTree, images: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        wanted = set(layers)
        logits, mutated = module.apply(
            join(params, state),
            images,
            **mode(False),
            capture_intermediates=lambda mdl, method: (
                method == "__call__" and "/".join(mdl.path) in wanted
            ),
            mutable=["intermediates"],
        )
        return logits, first_outputs(mutated.get("intermediates", {}), layers)

    model = Model(init, apply, activations, table, name or f"Linen {type(module).__name__}")
    return Adapted(model, variables["params"], variables.get(collection, {}), join)
