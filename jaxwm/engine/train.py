"""Pure, jitted training and evaluation steps over plain pytrees.

The whole dataset lives on the accelerator as uint8; batches are gathered, augmented (random
crop + flip) and normalised inside jit, and several steps run in one ``lax.scan`` so the host
never waits on the device between steps. Metrics come back as summed device scalars that the
caller fetches when it wants (after dispatching the next chunk), so there is no per-step sync.

Everything here depends on jax/optax only and takes the model as its ``apply`` function (see
:mod:`jaxwm.models` for the contract), so any JAX network can be trained with it.

Example:
  >>> model = models.resnet(10, stage_sizes=(1, 1), widths=(8, 16))
  >>> tx = optim.make_optimizer(peak_lr=0.1, total_steps=100)
  >>> ts = init_train_state(model.init, tx, jax.random.key(0), x_train[:1])
  >>> step = make_train_step(model.apply, tx, mean, std)
  >>> run = make_train_chunk(step, batch_size=64, chunk_steps=10)
  >>> ts, metrics = run(ts, x_train, y_train, perm, 0)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from jaxwm.engine import compiled, partition
from jaxwm.engine.hparams import BN_MODES

PyTree = Any


class TrainState(NamedTuple):
    """Everything a training run carries between steps: a plain pytree.

    Attributes:
      params: Trainable parameters.
      state: Non-trainable model state (BatchNorm statistics).
      opt_state: Optimizer state.
      step: Scalar int32 step counter (drives the learning-rate schedule).
      rng: Raw ``uint32[2]`` key data (``jax.random.key_data``), so checkpoints stay plain arrays.
    """

    params: PyTree
    state: PyTree
    opt_state: PyTree
    step: jax.Array
    rng: jax.Array


def init_train_state(
    init_fn: Callable[[jax.Array, jax.Array], tuple[PyTree, PyTree]],
    tx: optax.GradientTransformation,
    key: jax.Array,
    sample: jax.Array,
) -> TrainState:
    """Initialises parameters, model state and optimizer state.

    The model is initialised by one compiled call (:func:`compiled_init`); the optimizer state
    (a few zero-filled trees) is built eagerly, so every run of a study shares one compilation
    of the initialiser whatever its optimizer.

    Args:
      init_fn: ``init(key, sample_images) -> (params, state)``; must be traceable.
      tx: The (possibly masked) optimizer.
      key: PRNG key (new-style or raw).
      sample: A batch of normalised images with the right H, W, C (values unused).
    """
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    k_init, k_run = jax.random.split(key)
    params, state = compiled_init(init_fn)(k_init, jnp.asarray(sample, jnp.float32))
    return TrainState(
        params, state, tx.init(params), jnp.zeros((), jnp.int32), jax.random.key_data(k_run)
    )


@compiled.cached
def compiled_init(
    init_fn: Callable[[jax.Array, jax.Array], tuple[PyTree, PyTree]],
) -> Callable[[jax.Array, jax.Array], tuple[PyTree, PyTree]]:
    """``init_fn`` jitted, cached per function: one compilation per model and input shape.

    Run eagerly, a ResNet18 initialisation dispatches about a hundred single-op programs, each
    compiled on its own (on a GPU, convolutions autotuned too): 6.1 s on 2 CPU cores against
    3.4 s as one jitted call. The random streams are the same, so the values are too.

    Example:
      >>> params, state = compiled_init(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    """
    return jax.jit(init_fn)


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """uint8 NHWC -> float32, ``(x / 255 - mean) / std`` per channel."""
    x = images.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def augment(
    key: jax.Array, images: jax.Array, *, crop_pad: int = 4, flip: bool = True
) -> jax.Array:
    """Random crop (after reflect padding) and horizontal flip, per image, inside jit.

    Works on uint8 or float NHWC batches; ``crop_pad=0`` and ``flip=False`` is the identity.
    """
    n, h, w, _ = images.shape
    k_crop, k_flip = jax.random.split(key)
    if crop_pad > 0:
        p = crop_pad
        padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
        offs = jax.random.randint(k_crop, (n, 2), 0, 2 * p + 1)
        # Crop = two one-hot matmul-free gathers: shift rows, then columns, by per-image offsets.
        rows = offs[:, 0, None] + jnp.arange(h)[None, :]
        cols = offs[:, 1, None] + jnp.arange(w)[None, :]
        images = jnp.take_along_axis(padded, rows[:, :, None, None], axis=1)
        images = jnp.take_along_axis(images, cols[:, None, :, None], axis=2)
    if flip:
        do_flip = jax.random.bernoulli(k_flip, 0.5, (n, 1, 1, 1))
        images = jnp.where(do_flip, images[:, :, ::-1], images)
    return images


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Mean softmax cross-entropy with optional label smoothing, in float32."""
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
    if label_smoothing:
        onehot = optax.smooth_labels(onehot, label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), onehot).mean()


def make_train_step(
    apply_fn: Callable[..., tuple[jax.Array, PyTree]],
    tx: optax.GradientTransformation,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    mask: PyTree | None = None,
    label_smoothing: float = 0.0,
    crop_pad: int = 4,
    flip: bool = True,
    bn_mode: str = "trainable",
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """Builds one SGD step ``step(ts, images_u8, labels) -> (ts, metrics)`` (not yet jitted).

    Args:
      apply_fn: Model apply (see :mod:`jaxwm.models` for the contract).
      tx: Optimizer; when ``mask`` is given it must be ``partition.masked(base, mask)``.
      mean, std: Per-channel normalisation in [0, 1] units.
      mask: Boolean pytree like ``params``; False leaves are frozen: they are not differentiated
        (XLA skips the frozen prefix's backward pass), keep bit-identical values, and the
        stateful layers under them run in inference mode with their statistics restored.
      label_smoothing: Label smoothing for the cross-entropy.
      crop_pad, flip: Augmentation (``crop_pad=0, flip=False`` disables it).
      bn_mode: How stateful layers (BatchNorm) train (:data:`jaxwm.engine.hparams.BN_MODES`).
        ``"inference"``: every layer in inference mode and all model state kept (e.g. when
        training on a tiny out-of-distribution trigger set whose batch statistics would
        corrupt the running averages). ``"trainable"``: the layers under ``mask``'s frozen
        modules in inference mode with their state restored, the others in batch-statistics
        mode. ``"all"`` (PyTorch's ``model.train()``): every layer in batch-statistics mode
        and all running averages updated, frozen layers included; frozen parameters are
        still passed through bit-identical.

    Returns:
      The step. Metrics are sums over the batch: ``loss_sum``, ``correct``, ``count``.
    """
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {'|'.join(BN_MODES)}, got {bn_mode!r}")
    if bn_mode == "inference":
        # Every module path that holds state (the empty-string prefix would match everything).
        frozen: tuple[str, ...] = ("",)
    elif bn_mode == "all" or mask is None:
        frozen = ()  # no hint: every stateful layer trains on batch statistics
    else:
        frozen = partition.frozen_modules(mask)

    def step(ts: TrainState, images: jax.Array, labels: jax.Array):
        key = jax.random.fold_in(jax.random.wrap_key_data(ts.rng), ts.step)
        x = normalize(augment(key, images, crop_pad=crop_pad, flip=flip), mean, std)
        if mask is None:
            trainable, fixed = ts.params, None
        else:
            trainable, fixed = partition.split(ts.params, mask)

        def loss_fn(tp):
            p = tp if mask is None else partition.merge(tp, fixed, mask)
            logits, new_state = apply_fn(p, ts.state, x, train=True, frozen=frozen)
            return cross_entropy(logits, labels, label_smoothing), (logits, new_state)

        (loss, (logits, new_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        if bn_mode == "inference":
            new_state = ts.state
        elif bn_mode == "trainable" and mask is not None:
            keep = partition.state_mask(new_state, frozen)
            new_state = jax.tree.map(lambda k, o, n: o if k else n, keep, ts.state, new_state)
        if mask is not None:
            grads = partition.fill_frozen(grads, ts.params, mask)
        updates, opt_state = tx.update(grads, ts.opt_state, ts.params)
        if mask is None:
            params = optax.apply_updates(ts.params, updates)
        else:
            # Frozen leaves are passed through untouched (not "+ 0"), so they stay bit-identical.
            params = jax.tree.map(
                lambda m, p, u: (p + u).astype(p.dtype) if m else p, mask, ts.params, updates
            )
        metrics = {
            "loss_sum": loss * labels.shape[0],
            "correct": jnp.sum(jnp.argmax(logits, -1) == labels),
            "count": jnp.asarray(labels.shape[0], jnp.int32),
        }
        return TrainState(params, new_state, opt_state, ts.step + 1, ts.rng), metrics

    return step


def make_train_chunk(
    step: Callable,
    batch_size: int,
    chunk_steps: int,
    *,
    host_loop: bool | None = None,
    batch_sharding: NamedSharding | None = None,
) -> Callable[[TrainState, jax.Array, jax.Array, jax.Array, jax.Array], tuple[TrainState, dict]]:
    """Runs ``chunk_steps`` jitted steps over batches taken from a permutation.

    Returns ``run(ts, images, labels, perm, start) -> (ts, metrics)``: batch ``i`` of the chunk
    is ``images[perm[start + i * batch_size : ...]]``; metrics are summed over the chunk. ``ts``
    is donated; the dataset is not. ``start`` is traced, so every chunk of every epoch reuses one
    compilation.

    On GPU/TPU the chunk is one ``lax.scan`` in one jitted call (no host round trip between
    steps). ``host_loop`` (default: only on CPU) instead dispatches one jitted step per batch
    from Python, still asynchronously: XLA:CPU picks slow layouts for backward convolutions
    inside a loop body, 20-30x slower per step (measured with bench/train_throughput.py).

    ``batch_sharding`` (data parallelism, see :mod:`jaxwm.engine.parallel`): the sharding of a batch
    on a device mesh, e.g. ``parallel.batch_sharding(mesh)``. Each gathered batch is constrained
    to it, so every device computes its slice, and the new state and metrics are constrained to
    be replicated on that mesh. ``ts``, the dataset and ``perm`` should then be replicated on the
    mesh, and ``batch_size`` divisible by its size. None (default): no constraint.
    """
    same = None if batch_sharding is None else NamedSharding(batch_sharding.mesh, PartitionSpec())

    def one(ts, images, labels, perm, start):
        idx = jax.lax.dynamic_slice_in_dim(perm, start, batch_size)
        if batch_sharding is None:
            return step(ts, images[idx], labels[idx])
        # Sharded indices make each device gather only its rows of the replicated dataset.
        idx = jax.lax.with_sharding_constraint(idx, batch_sharding)
        x, y = jax.lax.with_sharding_constraint((images[idx], labels[idx]), batch_sharding)
        return jax.lax.with_sharding_constraint(step(ts, x, y), same)

    return chunk_runner(one, batch_size, chunk_steps, host_loop=host_loop)


def chunk_runner(
    one: Callable, batch_size: int, chunk_steps: int, *, host_loop: bool | None = None
) -> Callable:
    """Runs ``one(ts, images, labels, perm, start) -> (ts, metrics)`` for ``chunk_steps`` batches.

    The driver shared by :func:`make_train_chunk` and :func:`jaxwm.engine.sweep.make_sweep_chunk`:
    one donated ``lax.scan`` per call on GPU/TPU, or (``host_loop``, default on CPU) one jitted
    step per batch dispatched from Python. Metrics are summed over the chunk's steps (axis 0).
    """
    if host_loop is None:
        host_loop = jax.default_backend() == "cpu"
    if host_loop:
        jstep = jax.jit(one, donate_argnums=(0,))

        def run_host(ts, images, labels, perm, start):
            total = None
            for i in range(chunk_steps):
                ts, m = jstep(ts, images, labels, perm, start + i * batch_size)
                total = m if total is None else jax.tree.map(jnp.add, total, m)
            return ts, total

        return run_host

    def run(ts, images, labels, perm, start):
        def body(ts, i):
            return one(ts, images, labels, perm, start + i * batch_size)

        ts, metrics = jax.lax.scan(body, ts, jnp.arange(chunk_steps))
        return ts, jax.tree.map(lambda v: jnp.sum(v, axis=0), metrics)

    return jax.jit(run, donate_argnums=(0,))


def epoch_permutation(key: jax.Array, n: int, epoch: int) -> jax.Array:
    """Shuffled indices for ``epoch``: a function of (key, epoch) only, so resuming repeats it."""
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    return jax.random.permutation(jax.random.fold_in(key, epoch), n)


def make_eval(
    apply_fn: Callable[..., tuple[jax.Array, PyTree]],
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 1000,
) -> Callable[[PyTree, PyTree, jax.Array, jax.Array], jax.Array]:
    """``evaluate(params, state, images_u8, labels) -> accuracy`` (jitted, inference mode).

    The set is padded to whole batches inside jit and padded rows are masked, so any size works
    and each distinct set shape compiles once. The jitted function is cached per
    ``(apply_fn, mean, std, batch_size)``, so the many evaluations of a study share compilations.
    """
    return _make_eval(apply_fn, _floats(mean), _floats(std), int(batch_size))


def _floats(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


@compiled.cached
def _make_eval(apply_fn: Callable, mean: tuple, std: tuple, batch_size: int) -> Callable:
    def evaluate(params, state, images, labels):
        n = images.shape[0]
        nb = -(-n // batch_size)
        pad = nb * batch_size - n
        xs = jnp.pad(images, ((0, pad),) + ((0, 0),) * (images.ndim - 1))
        ys = jnp.pad(labels, (0, pad), constant_values=-1)
        xs = xs.reshape(nb, batch_size, *images.shape[1:])
        ys = ys.reshape(nb, batch_size)

        def body(total, batch):
            x, y = batch
            logits, _ = apply_fn(params, state, normalize(x, mean, std), train=False)
            return total + jnp.sum(jnp.argmax(logits, -1) == y), None

        correct, _ = jax.lax.scan(body, jnp.zeros((), jnp.int32), (xs, ys))
        return correct / n

    return jax.jit(evaluate)


def make_predict(
    apply_fn: Callable[..., tuple[jax.Array, PyTree]],
    mean: Sequence[float],
    std: Sequence[float],
) -> Callable[[PyTree, PyTree, jax.Array], jax.Array]:
    """``predict(params, state, images_u8) -> logits`` (jitted, inference mode; cached like
    :func:`make_eval`)."""
    return _make_predict(apply_fn, _floats(mean), _floats(std))


@compiled.cached
def _make_predict(apply_fn: Callable, mean: tuple, std: tuple) -> Callable:
    def predict(params, state, images):
        return apply_fn(params, state, normalize(images, mean, std), train=False)[0]

    return jax.jit(predict)
