"""Flax ResNet for 32x32-class images, exposed as pure functions over plain pytrees.

This is the only jaxwm module that imports Flax. Everything else (training, watermark embedding,
attacks, verification) sees a :class:`Model`: a bundle of pure functions over plain dicts of
arrays. :mod:`jaxwm.adapters` builds the same bundle from a user's own Flax Linen, Flax NNX or
Equinox network, which then goes through the same algorithms.

The apply contract (what every jaxwm algorithm relies on)::

    logits, new_state = model.apply(params, state, images, train=..., frozen=...)

* ``params`` -- trainable parameters, a nested dict; ``state`` -- non-trainable collections
  (here BatchNorm running statistics ``mean``/``var``), a nested dict with the same module paths.
* ``images`` -- float32 NHWC, already normalised.
* ``frozen`` -- a tuple of module paths (``"layer1/block0/bn1"``) whose parameters are frozen
  (a path covers its whole subtree; ``""`` covers every module).
  Stateful layers under a frozen path run in inference mode (running averages) even when
  ``train=True``: a frozen layer then computes exactly what it computes at test time and its
  statistics do not drift. The training code additionally restores frozen state leaves, so a
  model that ignores this hint still keeps its frozen statistics; it just trains against batch
  statistics. The engine's ``bn_mode`` decides the hint (:mod:`jaxwm.engine.train`):
  ``"inference"`` passes ``("",)``, ``"trainable"`` the frozen modules, ``"all"`` (PyTorch's
  ``model.train()``) passes ``()`` and keeps every updated statistic.

Parameter paths are stable and readable, because watermark layers are chosen by path pattern::

    stem/conv/kernel, stem/bn/{scale,bias}
    layer{1..4}/block{i}/{conv1,bn1,conv2,bn2}/..., layer{k}/block0/{proj_conv,proj_bn}/...
    head/{kernel,bias}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from functools import lru_cache, partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

PyTree = Any
ApplyFn = Callable[..., tuple[jax.Array, PyTree]]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _is_frozen(path: str, frozen: Sequence[str]) -> bool:
    return any(f == "" or path == f or path.startswith(f + "/") for f in frozen)


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (He et al. 2016)."""

    width: int
    stride: int
    at: str
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, frozen: tuple[str, ...]) -> jax.Array:
        conv = partial(nn.Conv, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32)

        def bn(name: str) -> nn.BatchNorm:
            return _bn(f"{self.at}/{name}", train, frozen, self.dtype, name)

        s = (self.stride, self.stride)
        y = conv(self.width, (3, 3), s, name="conv1")(x)
        y = nn.relu(bn("bn1")(y))
        # The internal activation is the unit that activation-frequency pruning removes:
        # zeroing conv1's output channel c (and bn1's scale/bias at c) silences it exactly.
        self.sow("intermediates", "relu1", y)
        y = conv(self.width, (3, 3), name="conv2")(y)
        y = bn("bn2")(y)
        if x.shape[-1] != self.width or self.stride != 1:
            x = conv(self.width, (1, 1), s, name="proj_conv")(x)
            x = bn("proj_bn")(x)
        out = nn.relu(x + y)
        # The residual stream after this block: a channel of it is a "stream" unit (see resnet).
        self.sow("intermediates", "out", out)
        return out


def _bn(path: str, train: bool, frozen: Sequence[str], dtype: Any, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(
        use_running_average=not train or _is_frozen(path, frozen),
        momentum=0.9,
        epsilon=1e-5,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


class _Stem(nn.Module):
    width: int
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, frozen: tuple[str, ...]) -> jax.Array:
        x = nn.Conv(self.width, (3, 3), use_bias=False, dtype=self.dtype, name="conv")(x)
        return nn.relu(_bn("stem/bn", train, frozen, self.dtype, "bn")(x))


class _Stage(nn.Module):
    width: int
    n_blocks: int
    stride: int
    at: str
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, frozen: tuple[str, ...]) -> jax.Array:
        for j in range(self.n_blocks):
            x = _BasicBlock(
                self.width,
                self.stride if j == 0 else 1,
                f"{self.at}/block{j}",
                self.dtype,
                name=f"block{j}",
            )(x, train, frozen)
        return x


class ResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stride-1 stem, no max-pool, BasicBlock stages, linear head.

    Attributes:
      num_classes: Output classes.
      stage_sizes: Blocks per stage; (2, 2, 2, 2) is ResNet18.
      widths: Channels per stage; (64, 128, 256, 512) is ResNet18.
      dtype: Compute dtype (parameters are always float32; the head computes in float32).
    """

    num_classes: int = 10
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    widths: Sequence[int] = (64, 128, 256, 512)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, frozen: tuple[str, ...] = ()
    ) -> jax.Array:
        x = _Stem(self.widths[0], self.dtype, name="stem")(x.astype(self.dtype), train, frozen)
        for i, (n, width) in enumerate(zip(self.stage_sizes, self.widths, strict=True)):
            name = f"layer{i + 1}"
            x = _Stage(width, n, 1 if i == 0 else 2, name, self.dtype, name=name)(x, train, frozen)
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        self.sow("intermediates", "features", x)  # the penultimate features (head's input)
        return nn.Dense(self.num_classes, dtype=jnp.float32, name="head")(x)


@dataclasses.dataclass(frozen=True)
class Model:
    """Pure functions of a network, with no framework object in sight.

    Attributes:
      init: ``init(key, sample_images) -> (params, state)``.
      apply: ``apply(params, state, images, *, train=False, frozen=()) -> (logits, new_state)``.
      activations: ``activations(params, state, images) -> (logits, {name: post-ReLU activation})``
        in inference mode; names are the module paths of the prunable units.
      prunable: ``{activation name: ((param path, channel axis), ...)}`` -- the parameter slices
        that produce each activation channel, so a channel mask becomes a parameter mask.
      name: Human-readable description.
      units: Optional, like ``activations`` but for every prunable unit the model exposes
        (a superset of ``activations``' names), for pruning beyond the block-internal units.
      unit_prunable: The channel -> parameter table of every name ``units`` returns.
      unit_scopes: ``{unit name: "block" | "stream" | "penultimate"}``: block-internal
        activations (the names of ``prunable``), residual-stream channels (stem included),
        the penultimate features. None when the model exposes only ``prunable``.
    """

    init: Callable[[jax.Array, jax.Array], tuple[PyTree, PyTree]]
    apply: ApplyFn
    activations: Callable[[PyTree, PyTree, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
    prunable: dict[str, tuple[tuple[str, int], ...]]
    name: str
    # Optional and last, so the adapters' positional Model(...) calls keep working.
    units: Callable[[PyTree, PyTree, jax.Array], tuple[jax.Array, dict[str, jax.Array]]] | None = (
        None
    )
    unit_prunable: dict[str, tuple[tuple[str, int], ...]] | None = None
    unit_scopes: dict[str, str] | None = None


def resnet(
    num_classes: int = 10,
    *,
    stage_sizes: Sequence[int] = (2, 2, 2, 2),
    widths: Sequence[int] = (64, 128, 256, 512),
    dtype: str = "float32",
) -> Model:
    """Builds a CIFAR-style ResNet as a :class:`Model` of pure functions.

    Args:
      num_classes: Number of output classes (10 for MNIST/CIFAR-10, 100 for CIFAR-100).
      stage_sizes: Blocks per stage; ResNet18 is (2, 2, 2, 2). Tests use e.g. (1, 1).
      widths: Channels per stage, same length as ``stage_sizes``.
      dtype: Compute dtype name: "float32", "bfloat16" or "float16". Parameters stay float32.

    Returns:
      A :class:`Model`. The input channel count is taken from the sample passed to ``init``.

    Example:
      >>> m = resnet(10, stage_sizes=(1, 1), widths=(8, 16))
      >>> params, state = m.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
      >>> logits, _ = m.apply(params, state, jnp.zeros((2, 8, 8, 1)))
      >>> logits.shape
      (2, 10)
    """
    if len(stage_sizes) != len(widths):
        raise ValueError(
            f"model.stage_sizes {tuple(stage_sizes)} and model.widths {tuple(widths)} "
            "must have the same length"
        )
    if dtype not in _DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return _resnet(int(num_classes), tuple(stage_sizes), tuple(widths), dtype)


@lru_cache(maxsize=32)
def _resnet(num_classes: int, stage_sizes: tuple, widths: tuple, dtype: str) -> Model:
    # Cached: the same architecture is the same Model object, with the same function objects,
    # so every jit cache keyed on ``apply`` (evaluation, embedding stages, attacks) is shared by
    # all the runs of a study in one process instead of compiling again per run.
    module = ResNet(num_classes, stage_sizes, widths, _DTYPES[dtype])

    def init(key: jax.Array, sample: jax.Array) -> tuple[PyTree, PyTree]:
        v = module.init(key, sample, train=False)
        return dict(v["params"]), dict(v.get("batch_stats", {}))

    def apply(
        params: PyTree,
        state: PyTree,
        images: jax.Array,
        *,
        train: bool = False,
        frozen: tuple[str, ...] = (),
    ) -> tuple[jax.Array, PyTree]:
        variables = {"params": params, "batch_stats": state}
        if not train:
            return module.apply(variables, images, train=False), state
        logits, mutated = module.apply(
            variables, images, train=True, frozen=tuple(frozen), mutable=["batch_stats"]
        )
        return logits, dict(mutated["batch_stats"])

    def activations(
        params: PyTree, state: PyTree, images: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        variables = {"params": params, "batch_stats": state}
        logits, mutated = module.apply(variables, images, train=False, mutable=["intermediates"])
        acts = {
            f"{stage}/{block}": sown["relu1"][0]
            for stage, blocks in mutated["intermediates"].items()
            if stage.startswith("layer")
            for block, sown in blocks.items()
        }
        return logits, acts

    def units(
        params: PyTree, state: PyTree, images: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        variables = {"params": params, "batch_stats": state}
        logits, mutated = module.apply(variables, images, train=False, mutable=["intermediates"])
        sown = mutated["intermediates"]
        acts = {}
        for i, n_blocks in enumerate(stage_sizes):
            stage = sown[f"layer{i + 1}"]
            for j in range(n_blocks):
                acts[f"layer{i + 1}/block{j}"] = stage[f"block{j}"]["relu1"][0]
            # A stream channel is measured where it leaves the stage.
            acts[f"layer{i + 1}/stream"] = stage[f"block{n_blocks - 1}"]["out"][0]
        acts["features"] = sown["features"][0]
        return logits, acts

    prunable = {}
    for i, n_blocks in enumerate(stage_sizes):
        for j in range(n_blocks):
            p = f"layer{i + 1}/block{j}"
            prunable[p] = ((f"{p}/conv1/kernel", 3), (f"{p}/bn1/scale", 0), (f"{p}/bn1/bias", 0))
    # A residual-stream channel c of stage i is silenced exactly when everything added into it
    # is zero at c: every block's conv2/bn2, the projection of block0 (stages > 1) or, in stage
    # 1 (identity shortcut, same width), the stem -- so the stem is pruned as part of it.
    unit_prunable = dict(prunable)
    unit_scopes = dict.fromkeys(prunable, "block")
    for i, n_blocks in enumerate(stage_sizes):
        p = f"layer{i + 1}"
        table = [("stem/conv/kernel", 3), ("stem/bn/scale", 0), ("stem/bn/bias", 0)]
        if i > 0:
            b0 = f"{p}/block0"
            table = [(f"{b0}/proj_conv/kernel", 3), (f"{b0}/proj_bn/scale", 0),
                     (f"{b0}/proj_bn/bias", 0)]  # fmt: skip
        for j in range(n_blocks):
            b = f"{p}/block{j}"
            table += [(f"{b}/conv2/kernel", 3), (f"{b}/bn2/scale", 0), (f"{b}/bn2/bias", 0)]
        unit_prunable[f"{p}/stream"] = tuple(table)
        unit_scopes[f"{p}/stream"] = "stream"
    unit_prunable["features"] = (("head/kernel", 0),)  # a feature reaches logits only here
    unit_scopes["features"] = "penultimate"
    name = f"ResNet(stages={tuple(stage_sizes)}, widths={tuple(widths)}, {dtype})"
    return Model(init, apply, activations, prunable, name, units, unit_prunable, unit_scopes)


def resnet18(num_classes: int = 10, *, dtype: str = "float32") -> Model:
    """ResNet18 (11.17M parameters at 3 input channels and 10 classes), CIFAR stem.

    Example:
      >>> m = resnet18(10)
      >>> params, state = m.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    """
    return resnet(num_classes, dtype=dtype)


def count_params(params: PyTree) -> int:
    """Number of scalar parameters in a pytree."""
    return sum(int(x.size) for x in jax.tree.leaves(params))
