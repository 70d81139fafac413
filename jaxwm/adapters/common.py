"""What the framework adapters share: the :class:`Adapted` bundle and the pruning protocol.

Activation-frequency pruning (:mod:`jaxwm.attacks.prune`) needs, per prunable unit, its
activations on the attacker's images and the parameter slices that produce each channel. The
adapters get both from a list of *layer paths* (``prune_layers``):

* the activation of a layer is the output of its first call, channels last. Pruning counts how
  often a channel is positive, and ``relu(y) > 0`` exactly when ``y > 0``, so for a layer
  followed by a ReLU this is the firing rate of the ReLU's channel;
* pruning channel ``c`` zeroes the layer's own slices of it: ``kernel[..., c]`` (Flax),
  ``weight[c]`` (Equinox), ``bias[c]`` and a normalisation's ``scale[c]``, so the layer's output
  in that channel is exactly 0. Name the layer just before the ReLU: for ``conv -> BatchNorm ->
  relu`` that is the BatchNorm (zeroing the convolution alone would leave the BatchNorm's bias
  in the channel). Any other choice of slices can be given as a full table,
  ``{"conv1": (("conv1/kernel", 3), ("bn1/scale", 0), ("bn1/bias", 0))}``.

No framework is imported here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxwm.engine import partition
from jaxwm.errors import ModelError
from jaxwm.models import Model

PyTree = Any
Prunable = dict[str, tuple[tuple[str, int], ...]]
PruneLayers = Sequence[str] | Mapping[str, Sequence[tuple[str, int]]]


@dataclasses.dataclass(frozen=True)
class Adapted:
    """A user's network as jaxwm sees it, and the way back to it.

    Attributes:
      model: The pure functions (:class:`jaxwm.models.Model`) every algorithm takes.
      params: Trainable parameters of the network given to the adapter.
      state: Its non-trainable state (e.g. BatchNorm statistics; ``{}`` when it has none).
      rebuild: ``rebuild(params, state)`` -> the network in its own framework (Linen
        variables, an NNX module, an Equinox module), e.g. after embedding a watermark.
    """

    model: Model
    params: PyTree
    state: PyTree
    rebuild: Callable[[PyTree, PyTree], Any]


def module_paths(params: PyTree) -> list[str]:
    """Every module path that owns a parameter leaf (a leaf's path minus its last key)."""
    return sorted({p.rpartition("/")[0] for p in partition.tree_paths(params)} - {""})


def prunable_table(
    params: PyTree, prune_layers: PruneLayers, channel_axes: Mapping[str, int]
) -> Prunable:
    """The ``prunable`` table of a :class:`~jaxwm.models.Model` from the user's layer list.

    Args:
      params: The parameters (paths and shapes).
      prune_layers: Layer paths (each layer's own ``channel_axes`` leaves are its slices), or a
        full table ``{layer path: ((param path, channel axis), ...)}`` used as given.
      channel_axes: Leaf name -> its output-channel axis (negative counts from the end), e.g.
        ``{"kernel": -1, "bias": 0}`` for Flax.

    Returns:
      ``{layer path: ((param path, axis >= 0), ...)}``.

    Raises:
      ModelError: a layer or parameter path does not exist, an axis is out of range, or the
        slices of one layer disagree on the channel count.
    """
    leaves = dict(zip(partition.tree_paths(params), jax.tree.leaves(params), strict=True))
    known = module_paths(params)
    if isinstance(prune_layers, str):
        raise ModelError(
            f"prune_layers must be a list of layer paths, got the string {prune_layers!r}"
        )
    if isinstance(prune_layers, Mapping):
        wanted = {k: tuple(v) for k, v in prune_layers.items()}
    else:
        wanted = {}
        for layer in prune_layers:
            found = tuple(
                (f"{layer}/{leaf}", axis)
                for leaf, axis in channel_axes.items()
                if f"{layer}/{leaf}" in leaves
            )
            if not found:
                raise ModelError(
                    f"prune_layers: {layer!r} is not a layer with parameters named "
                    f"{sorted(channel_axes)}; layers with parameters: {known}"
                )
            wanted[layer] = found
    table: Prunable = {}
    for layer, slices in wanted.items():
        if layer not in known:
            raise ModelError(
                f"prune_layers: {layer!r} is not a layer of the network; layers: {known}"
            )
        resolved, channels = [], set()
        for path, axis in slices:
            if path not in leaves:
                raise ModelError(
                    f"prune_layers[{layer!r}] names {path!r}, which is not a parameter"
                )
            ndim = np.ndim(leaves[path])
            if not -ndim <= int(axis) < ndim:
                raise ModelError(
                    f"prune_layers[{layer!r}]: axis {axis} is out of range for {path!r} "
                    f"(ndim {ndim})"
                )
            resolved.append((path, int(axis) % ndim))
            channels.add(np.shape(leaves[path])[int(axis)])
        if len(channels) > 1:
            raise ModelError(
                f"prune_layers[{layer!r}]: its slices have {sorted(channels)} channels"
            )
        table[layer] = tuple(resolved)
    return table


def find(node: Any, path: str) -> Any:
    """The object at ``path`` (``/``-joined attributes, dict keys or sequence indices)."""
    for part in filter(None, path.split("/")):
        if isinstance(node, Mapping):
            node = node[part] if part in node else node[int(part)]
        elif part.isdigit() and not hasattr(node, part):
            node = node[int(part)]
        else:
            node = getattr(node, part)
    return node


def first_outputs(captured: Mapping, layers: Sequence[str], method: str = "__call__") -> dict:
    """``{layer: first output}`` from a tree of captured method outputs (Flax's layout)."""
    out = {}
    for layer in layers:
        try:
            out[layer] = find(captured, layer)[method][0]
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise ModelError(
                f"prune_layers: layer {layer!r} was not called by the forward pass ({e!r})"
            ) from e
    return out
