"""Sweeps: independent runs (seeds x learning rates) trained at once with ``vmap``.

Several small models underuse a GPU one at a time. A sweep stacks the :class:`TrainState` of
every run along a leading *run axis* and ``vmap``s the training step over it, so one compiled
program trains all of them. Each run keeps its own parameters, optimizer state, random key and
data order (its own epoch permutation); the dataset is shared (not stacked). With several
devices, the run axis is sharded over them (``NamedSharding``), each device training its runs.

Run ``r`` of :func:`fit_sweep` reproduces ``loop.fit(..., seed=seeds[i])`` with
``peak_lr=lrs[j]`` up to float rounding (same initialisation, shuffling and augmentation keys),
on one device and without checkpoints.

Per-run learning rates are *values*, so they are vmapped too: jaxwm's schedules keep their
peak rate in the optimizer state (:mod:`jaxwm.engine.optim`), and each run's state holds its own.
Hyper-parameters that change shapes or code (batch size, epochs,
optimizer kind, model widths) cannot share one program: sweep those with separate calls.

Example:
  >>> runs = fit_sweep(model.init, model.apply, ds, hp, seeds=[0, 1, 2, 3], lrs=[0.05, 0.1])
  >>> summarize(runs)
  [{'peak_lr': 0.05, 'test_accuracy': {'mean': ..., 'std': ..., 'n': 4}, ...}, ...]
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from tqdm.auto import tqdm

from jaxwm.data import Dataset
from jaxwm.engine import compiled, epochs, loop, parallel, train
from jaxwm.engine.hparams import Hparams, program_key

PyTree = Any
RUN_AXIS = "runs"


def stack(trees: Sequence[PyTree]) -> PyTree:
    """Stacks same-structure pytrees along a new leading (run) axis.

    Example:
      >>> stack([{"w": jnp.zeros(3)}, {"w": jnp.ones(3)}])["w"].shape
      (2, 3)
    """
    if not trees:
        raise ValueError("stack needs at least one tree")
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree: PyTree, n: int) -> list[PyTree]:
    """The inverse of :func:`stack`: ``n`` trees, the ``i``-th holding index ``i`` of each leaf.

    Example:
      >>> [t["w"].shape for t in unstack({"w": jnp.zeros((2, 3))}, 2)]
      [(3,), (3,)]
    """
    return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(n)]


def make_sweep_chunk(
    step: Callable,
    batch_size: int,
    chunk_steps: int,
    *,
    host_loop: bool | None = None,
    run_sharding: NamedSharding | None = None,
) -> Callable[[train.TrainState, jax.Array, jax.Array, jax.Array, int], tuple[Any, dict]]:
    """``chunk_steps`` steps of every run at once: :func:`jaxwm.engine.train.make_train_chunk`, vmapped.

    Args:
      step: A step from :func:`jaxwm.engine.train.make_train_step` (for one run).
      batch_size: Per-run batch size.
      chunk_steps: Steps per call.
      host_loop: One jitted step per batch from Python (default: on CPU only; see
        :func:`jaxwm.engine.train.make_train_chunk` for why) instead of one ``lax.scan``.
      run_sharding: Sharding of the run axis (e.g. ``parallel.batch_sharding(mesh)``); the
        new state and metrics are constrained to it. None: no constraint.

    Returns:
      ``run(ts, images, labels, perms, start) -> (ts, metrics)``: ``ts`` is a stacked
      :class:`TrainState` (donated), ``perms`` is ``[runs, n]`` (one permutation per run),
      ``images``/``labels`` are shared; run ``r``'s batch ``i`` is
      ``images[perms[r, start + i * batch_size:...]]``. Metrics are per-run sums, shape
      ``[runs]``.

    Example:
      >>> run = make_sweep_chunk(step, 32, 8)
      >>> ts, m = run(stack([ts0, ts1]), x, y, jnp.stack([perm0, perm1]), 0)
      >>> m["loss_sum"].shape
      (2,)
    """

    def one(ts, images, labels, perm, start):
        idx = jax.lax.dynamic_slice_in_dim(perm, start, batch_size)
        return step(ts, images[idx], labels[idx])

    # The dataset and the offset are shared by all runs; state and permutation are per run.
    all_runs = jax.vmap(one, in_axes=(0, None, None, 0, None))

    def one_step(ts, images, labels, perms, start):
        out = all_runs(ts, images, labels, perms, start)
        if run_sharding is not None:
            out = jax.lax.with_sharding_constraint(out, run_sharding)
        return out

    return train.chunk_runner(one_step, batch_size, chunk_steps, host_loop=host_loop)


@compiled.cached
def _sweep_program(
    apply_fn: Callable,
    hp: Hparams,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    chunk: int,
    run_sharding: NamedSharding | None,
) -> Callable:
    """The engine's training step (:func:`jaxwm.engine.epochs.step_fn`) vmapped over runs."""
    step = epochs.step_fn(apply_fn, hp, mean, std)
    return make_sweep_chunk(step, hp.batch_size, chunk, run_sharding=run_sharding)


def run_placement(
    n_runs: int, mesh: Mesh | None = None
) -> tuple[Mesh | None, NamedSharding | None]:
    """Where the run axis of ``n_runs`` runs lives: ``(mesh, run sharding)``, or ``(None, None)``.

    Default ``mesh``: all devices when there are several. When ``n_runs`` does not divide over
    the mesh, a single process uses the largest sub-mesh it divides over (idle devices are
    better than every device repeating every run) and several processes replicate (every
    process must hold part of the mesh); both warn.

    Args:
      n_runs: Size of the run axis.
      mesh: A 1-D mesh; None for automatic.

    Returns:
      The mesh to place the dataset on and the sharding of stacked per-run arrays; None for
      both on a single device.
    """
    if mesh is None:
        if jax.device_count() == 1:
            return None, None
        mesh = parallel.data_mesh(axis_name=RUN_AXIS)
    n_dev = mesh.devices.size
    if n_runs % n_dev == 0:
        return mesh, parallel.batch_sharding(mesh)
    if jax.process_count() > 1:
        warnings.warn(
            f"sweep: {n_runs} runs do not divide over {n_dev} devices; every device repeats "
            "every run (replicated). Use a multiple of the device count.",
            stacklevel=2,
        )
        return mesh, parallel.replicated(mesh)
    d = max(k for k in range(1, n_dev + 1) if n_runs % k == 0)
    warnings.warn(
        f"sweep: {n_runs} runs do not divide over {n_dev} devices; using {d} of them. "
        "Use a multiple of the device count to use all.",
        stacklevel=2,
    )
    if d == 1:
        return None, None
    sub = parallel.data_mesh(list(mesh.devices.flat)[:d], axis_name=mesh.axis_names[0])
    return sub, parallel.batch_sharding(sub)


@dataclasses.dataclass
class SweepRun(loop.FitResult):
    """One run of a sweep: a :class:`jaxwm.engine.loop.FitResult` (state as host numpy arrays) plus
    the run's ``seed`` and ``peak_lr``. ``wall_s`` is the whole sweep's wall time."""

    seed: int = 0
    peak_lr: float = 0.0


def fit_sweep(
    model_init: Callable,
    model_apply: Callable,
    ds: Dataset,
    hp: Hparams,
    seeds: Sequence[int],
    *,
    lrs: Sequence[float] | None = None,
    mesh: Mesh | None = None,
    progress: bool = True,
    desc: str = "sweep",
) -> list[SweepRun]:
    """Trains one run per (learning rate, seed) at once, as :func:`jaxwm.engine.loop.fit` would each.

    Args:
      model_init, model_apply: The model's pure functions (see :mod:`jaxwm.models`).
      ds: The dataset, shared by all runs.
      hp: Hyper-parameters shared by all runs (``peak_lr`` unless ``lrs`` is given).
      seeds: One run per seed (initialisation, shuffling and augmentation, as in ``fit``).
      lrs: Peak learning rates; runs are the grid ``lrs x seeds`` (learning rate outer).
        None: ``hp.peak_lr`` only.
      mesh: 1-D device mesh for the run axis (see :func:`run_placement`); None: all devices
        when there are several. A one-device mesh, e.g. ``parallel.data_mesh(devs[:1])``,
        keeps everything on that device.
      progress: Show a progress bar (process 0 only).
      desc: Progress-bar label.

    Returns:
      One :class:`SweepRun` per run, in grid order, with its history (``fit``'s per-epoch
      rows) and final test accuracy.

    Example:
      >>> runs = fit_sweep(m.init, m.apply, ds, hp, seeds=range(4))
      >>> aggregate([r.test_accuracy for r in runs])
      {'mean': 0.97, 'std': 0.004, 'n': 4}
    """
    t0 = time.perf_counter()
    seeds = [int(s) for s in seeds]
    lr_values = [hp.peak_lr] if lrs is None else [float(v) for v in lrs]
    if not seeds or not lr_values:
        raise ValueError("fit_sweep needs at least one seed and one learning rate")
    grid = [(lr, s) for lr in lr_values for s in seeds]
    n_runs = len(grid)
    mesh, run_sharding = run_placement(n_runs, mesh)
    x_train, y_train, x_test, y_test = parallel.put_dataset(ds, mesh)

    def place(tree):
        return tree if run_sharding is None else parallel.put(tree, run_sharding)

    n = int(x_train.shape[0])
    chunk, n_chunks = epochs.epoch_geometry(n, hp.batch_size, hp.steps_per_call)
    steps_per_epoch = chunk * n_chunks
    total = hp.epochs * steps_per_epoch
    tx = epochs.optimizer(hp, None, total, steps_per_epoch=steps_per_epoch)  # exactly fit's
    sample = jnp.zeros((1, *x_train.shape[1:]), jnp.float32)

    # One initialisation per run, as fit does (one cached compilation serves every run):
    # exact, and cheaper than compiling a vmapped init (about 7 s for a tiny ResNet on CPU).
    ts = stack([train.init_train_state(model_init, tx, jax.random.key(s), sample) for _, s in grid])
    if lrs is not None:  # each run's peak rate, in its schedule's state (see jaxwm.engine.optim)
        peak = jnp.asarray([v for v, _ in grid], jnp.float32)
        ts = ts._replace(opt_state=optax.tree_utils.tree_set(ts.opt_state, peak=peak))
    ts = place(ts)
    data_keys = jnp.stack([jax.random.key_data(jax.random.key(s + 1)) for _, s in grid])
    perms_of = jax.jit(jax.vmap(train.epoch_permutation, in_axes=(0, None, None)), static_argnums=1)

    run = _sweep_program(
        model_apply, program_key(hp), tuple(map(float, ds.mean)), tuple(map(float, ds.std)), chunk,
        run_sharding,
    )  # fmt: skip
    evaluate = jax.jit(
        jax.vmap(train.make_eval(model_apply, ds.mean, ds.std), in_axes=(0, 0, None, None))
    )
    primary = parallel.is_primary()
    bar = tqdm(
        total=total,
        desc=f"{desc} ({n_runs} runs)",
        unit="step",
        disable=not (progress and primary),
        dynamic_ncols=True,
        file=sys.stderr,
    )
    histories: list[list[dict]] = [[] for _ in grid]
    acc = np.full(n_runs, np.nan)
    for epoch in range(hp.epochs):
        t_epoch = time.perf_counter()
        perms = place(perms_of(data_keys, n, epoch))
        pending, sums = None, None
        for c in range(n_chunks):
            ts, m = run(ts, x_train, y_train, perms, c * chunk * hp.batch_size)
            if pending is not None:  # read the previous chunk while this one runs
                sums = _accumulate(sums, pending)
                bar.update(chunk)
            pending = m
        sums = _accumulate(sums, pending)
        bar.update(chunk)
        dt = time.perf_counter() - t_epoch
        last = epoch + 1 == hp.epochs
        evaluated = last or (hp.eval_every > 0 and (epoch + 1) % hp.eval_every == 0)
        if evaluated:
            acc = np.asarray(
                parallel.to_host(evaluate(ts.params, ts.state, x_test, y_test)),
                np.float64,
            )
        step_now = int(parallel.to_host(ts.step)[0])
        for r, history in enumerate(histories):
            count = sums["count"][r]
            row = {
                "epoch": epoch + 1,
                "step": step_now,
                "loss": float(sums["loss_sum"][r] / count),
                "train_acc": float(sums["correct"][r] / count),
                "img_per_s": float(count / dt),
                "epoch_s": dt,
                "wall_s": time.perf_counter() - t0,
            }
            if evaluated:
                row["test_acc"] = float(acc[r])
            history.append(row)
        if evaluated and progress and primary:
            s = aggregate(acc)
            bar.write(
                f"{desc} epoch {epoch + 1}/{hp.epochs}: test {format_stat(s)} over {n_runs} runs",
                file=sys.stderr,
            )
    bar.close()
    wall = time.perf_counter() - t0
    states = unstack(parallel.to_host(ts), n_runs)
    return [
        SweepRun(state, float(acc[r]), histories[r], wall, seed=s, peak_lr=lr)
        for r, (state, (lr, s)) in enumerate(zip(states, grid, strict=True))
    ]


def _accumulate(sums: dict | None, m: dict) -> dict:
    m = {k: np.asarray(v, np.float64) for k, v in parallel.to_host(m).items()}
    return m if sums is None else {k: sums[k] + m[k] for k in sums}


def aggregate(values: Sequence[float] | np.ndarray) -> dict[str, float | int]:
    """Mean, sample standard deviation (``ddof=1``) and count of ``values``.

    NaN values (runs that diverged) are kept, so they show up as a NaN mean. One value has an
    undefined sample standard deviation: ``std`` is NaN then.

    Args:
      values: One number per run.

    Returns:
      ``{"mean": float, "std": float, "n": int}``.

    Example:
      >>> aggregate([0.9, 0.92, 0.94])
      {'mean': 0.92, 'std': 0.02, 'n': 3}
    """
    x = np.asarray(values, np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("aggregate needs at least one value")
    std = float(np.std(x, ddof=1)) if x.size > 1 else math.nan
    return {"mean": float(np.mean(x)), "std": std, "n": int(x.size)}


def format_stat(stat: dict[str, float | int], digits: int = 4) -> str:
    """``"0.9200 ± 0.0200 (n=3)"`` for an :func:`aggregate` result."""
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f} (n={stat['n']})"


def summarize(runs: Sequence[SweepRun], key: str = "test_accuracy") -> list[dict[str, Any]]:
    """Aggregates ``key`` over seeds, one row per learning rate, in first-seen order.

    Args:
      runs: What :func:`fit_sweep` returned.
      key: A numeric :class:`SweepRun` attribute.

    Returns:
      ``[{"peak_lr": lr, "seeds": [...], key: aggregate(...)}, ...]``.

    Example:
      >>> summarize(runs)[0]["test_accuracy"]["n"]
      4
    """
    groups: dict[float, list[SweepRun]] = {}
    for r in runs:
        groups.setdefault(r.peak_lr, []).append(r)
    return [
        {
            "peak_lr": lr,
            "seeds": [r.seed for r in rs],
            key: aggregate([getattr(r, key) for r in rs]),
        }
        for lr, rs in groups.items()
    ]
