"""The host-side training loop: epochs of jitted chunks, progress, JSON-lines metrics, resume.

The loop never waits for the device between chunks: it dispatches chunk ``i + 1`` before it
reads chunk ``i``'s metrics, so host bookkeeping overlaps device work.

Example:
  >>> result = fit(model.init, model.apply, ds, hp, workdir="runs/demo")
  >>> result.test_accuracy
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from jaxwm.data import Dataset
from jaxwm.engine import checkpoint, epochs, parallel, train
from jaxwm.engine.hparams import Hparams, learning_rate

log = logging.getLogger(__name__)
PyTree = Any


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns."""

    state: train.TrainState
    test_accuracy: float
    history: list[dict]
    wall_s: float


def _write_jsonl(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _trim_jsonl(path: Path, upto_epoch: int) -> None:
    """Keep only the rows of epochs ``<= upto_epoch`` (the checkpoint's), written atomically.

    A run killed after logging an epoch but before checkpointing it would otherwise log that
    epoch twice on resume; a fresh start (``upto_epoch=0``) drops a previous run's rows.
    """
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by the kill
        if (
            isinstance(row, dict)
            and isinstance(row.get("epoch"), int)
            and row["epoch"] <= upto_epoch
        ):
            kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(x + "\n" for x in kept))
    os.replace(tmp, path)


def fit(
    model_init: Callable,
    model_apply: Callable,
    ds: Dataset,
    hp: Hparams,
    *,
    seed: int = 0,
    workdir: str | os.PathLike | None = None,
    mask: PyTree | None = None,
    init_state: train.TrainState | None = None,
    progress: bool = True,
    desc: str = "train",
    data_parallel: bool | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> FitResult:
    """Trains a model on ``ds``, resuming from ``workdir/checkpoints`` when present.

    Args:
      model_init, model_apply: The model's pure functions (see :mod:`jaxwm.models`).
      ds: The dataset (its arrays are moved to the device here).
      hp: Hyper-parameters.
      seed: Seeds initialisation, shuffling and augmentation; same seed, same result.
      workdir: Run directory for ``metrics.jsonl`` and ``checkpoints/``; None keeps nothing.
      mask: Optional trainable mask (see :mod:`jaxwm.engine.partition`); None trains everything.
      init_state: Start from these params/state instead of a fresh initialisation.
      progress: Show progress on stderr: a bar on a terminal; one plain line per epoch
        otherwise (a log file or a Slurm output gets no ``\\r`` frames).
      desc: Progress-bar label.
      data_parallel: Shard each batch over all devices with parameters, optimizer state and
        dataset replicated (see :mod:`jaxwm.engine.parallel`); None (default) does so when more than
        one device is visible. ``hp.batch_size`` is the global batch and must be divisible by
        the device count. The returned state is then replicated on all devices. With several
        processes, only process 0 writes ``metrics.jsonl`` and progress (orbax coordinates
        the checkpoint, which process 0 writes).
      on_epoch: Called (process 0 only) with each epoch's ``metrics.jsonl`` row, e.g. a
        TensorBoard writer.

    Returns:
      A :class:`FitResult` with the final state and test accuracy.
    """
    t0 = time.perf_counter()
    mesh = None
    if data_parallel or (data_parallel is None and jax.device_count() > 1):
        mesh = parallel.data_mesh()
        parallel.check_divisible(hp.batch_size, mesh)
    x_train, y_train, x_test, y_test = parallel.put_dataset(ds, mesh)
    primary = parallel.is_primary()
    n = int(x_train.shape[0])
    chunk, n_chunks = epochs.epoch_geometry(n, hp.batch_size, hp.steps_per_call)
    steps_per_epoch = chunk * n_chunks
    total = hp.epochs * steps_per_epoch
    sharding = None if mesh is None else parallel.batch_sharding(mesh)
    # This run's numbers, for init; the compiled chunk reads them from the optimizer state.
    tx = epochs.optimizer(hp, mask, total, steps_per_epoch=steps_per_epoch)
    run = epochs.epoch_fn(
        model_apply, hp, mean=ds.mean, std=ds.std, mask=mask, steps=chunk,
        sharding=sharding,
    )  # fmt: skip
    sample = jnp.zeros((1, *x_train.shape[1:]), jnp.float32)
    ts = train.init_train_state(model_init, tx, jax.random.key(seed), sample)
    if init_state is not None:
        # Copies: the training chunk donates its state, and the caller keeps its arrays.
        params, state = jax.tree.map(jnp.array, (init_state.params, init_state.state))
        ts = ts._replace(params=params, state=state)
    if mesh is not None:  # before a restore, so orbax restores straight into this layout
        ts = parallel.replicate(ts, mesh)
    evaluate = train.make_eval(model_apply, ds.mean, ds.std)

    ckpt, metrics_path, start_epoch, history = None, None, 0, []
    if workdir is not None:
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        metrics_path = workdir / "metrics.jsonl"
        ckpt = checkpoint.Checkpointer(workdir / "checkpoints")
        if ckpt.latest_step() is not None:
            ts, meta = ckpt.restore(ts)
            start_epoch = int(meta["epoch"])
            history = list(meta.get("history", []))
            log.info("resumed from %s at epoch %d", ckpt.directory, start_epoch)
            if primary:
                print(f"resuming {desc} from epoch {start_epoch}/{hp.epochs}", file=sys.stderr)
        if primary:
            _trim_jsonl(metrics_path, start_epoch)  # one row per epoch after any resume

    data_key = jax.random.key(seed + 1)
    show = progress and primary
    plain = show and not _is_terminal(sys.stderr)
    bar = tqdm(
        total=total,
        initial=start_epoch * steps_per_epoch,
        desc=desc,
        unit="step",
        disable=not show or plain,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    acc = float("nan")
    for epoch in range(start_epoch, hp.epochs):
        t_epoch = time.perf_counter()
        bar.set_description(f"{desc} {epoch + 1}/{hp.epochs}")
        perm = train.epoch_permutation(data_key, n, epoch)
        if mesh is not None:
            perm = parallel.replicate(perm, mesh)
        pending, sums = None, None
        for c in range(n_chunks):
            ts, m = run(ts, x_train, y_train, perm, c * chunk * hp.batch_size)
            if pending is not None:  # read the previous chunk while this one runs
                sums = _accumulate(sums, pending, bar, chunk, hp.batch_size, t_epoch)
            pending = m
        sums = _accumulate(sums, pending, bar, chunk, hp.batch_size, t_epoch)
        dt = time.perf_counter() - t_epoch
        row = {
            "epoch": epoch + 1,
            "step": int(ts.step),
            "loss": sums["loss_sum"] / sums["count"],
            "train_acc": sums["correct"] / sums["count"],
            "img_per_s": sums["count"] / dt,
            "epoch_s": dt,
            "wall_s": time.perf_counter() - t0,
            # The rate of the epoch's last step (the schedule of this run's optimizer).
            "lr": learning_rate(hp, total, int(ts.step) - 1, steps_per_epoch=steps_per_epoch),
        }
        last = epoch + 1 == hp.epochs
        if last or (hp.eval_every > 0 and (epoch + 1) % hp.eval_every == 0):
            acc = float(evaluate(ts.params, ts.state, x_test, y_test))
            row["test_acc"] = acc
        if plain or (show and "test_acc" in row):
            bar.write(_epoch_line(desc, epoch + 1, hp.epochs, row), file=sys.stderr)
        history.append(row)
        if metrics_path is not None and primary:
            _write_jsonl(metrics_path, row)
        if on_epoch is not None and primary:
            on_epoch(row)
        if ckpt is not None and (last or (epoch + 1) % max(hp.checkpoint_every, 1) == 0):
            # A host copy: the next chunk donates ``ts``'s device buffers while orbax writes.
            # Every process calls save (orbax synchronises them); process 0 writes host arrays.
            ckpt.save(epoch + 1, jax.device_get(ts), {"epoch": epoch + 1, "history": history})
        log.info("%s epoch %d: %s", desc, epoch + 1, row)
    bar.close()
    if ckpt is not None:
        ckpt.close()
    if math.isnan(acc):  # resumed after the last epoch: evaluate the restored state
        acc = float(evaluate(ts.params, ts.state, x_test, y_test))
    return FitResult(ts, acc, history, time.perf_counter() - t0)


def _is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def _epoch_line(desc: str, epoch: int, epochs: int, row: dict) -> str:
    """One epoch as one plain line (the test accuracy is on the full test split)."""
    test = f" test {row['test_acc']:.4f}" if "test_acc" in row else ""
    return (
        f"{desc} epoch {epoch}/{epochs}: loss {row['loss']:.4f} train {row['train_acc']:.4f}"
        f"{test} lr {row['lr']:.3g} ({row['img_per_s']:,.0f} img/s, {row['epoch_s']:.1f} s)"
    )


def _accumulate(sums, m, bar, chunk, batch_size, t_epoch) -> dict:
    m = {k: float(v) for k, v in jax.device_get(m).items()}
    sums = m if sums is None else {k: sums[k] + m[k] for k in sums}
    bar.update(chunk)
    dt = max(time.perf_counter() - t_epoch, 1e-9)
    bar.set_postfix(
        loss=f"{sums['loss_sum'] / sums['count']:.3f}",
        acc=f"{sums['correct'] / sums['count']:.3f}",
        img_s=f"{sums['count'] / dt:,.0f}",
        refresh=False,
    )
    return sums
