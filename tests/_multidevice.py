"""Multi-device checks, run in a fresh process with 8 fake CPU devices; prints one JSON line.

XLA reads ``--xla_force_host_platform_device_count`` once, when JAX starts, and the pytest
process has already started JAX with one device, so tests/test_parallel.py and
tests/test_sweep.py call :func:`results`, which runs this file once per pytest session::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \\
        python tests/_multidevice.py

Both files share one subprocess because most of its time is one-off XLA compilation
(parameter initialisers, the training step) that the checks then share.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxwm import data, models
from jaxwm.engine import loop, optim, parallel, sweep, train
from jaxwm.engine.hparams import Hparams
from jaxwm.runner import config

SOURCE = "synthetic:train=256,test=64,classes=4"


def _max_diff(a, b) -> float:
    """Largest ``|a - b| / (atol + rtol |b|)`` over all leaves: <= 1 means allclose."""
    worst = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        worst = max(worst, float(np.max(np.abs(x - y) / (1e-5 + 1e-4 * np.abs(y)), initial=0.0)))
    return worst


def _setup():
    ds = data.load_dataset(SOURCE)
    model = models.resnet(4, stage_sizes=(1, 1), widths=(4, 8))
    return ds, model


def check_parallel() -> dict:
    """Sharded chunk == single-device chunk; shardings; fit on 8 devices; divisibility error."""
    ds, model = _setup()
    out: dict = {}
    tx = optim.make_optimizer(peak_lr=0.05, total_steps=16)
    step = train.make_train_step(model.apply, tx, ds.mean, ds.std, crop_pad=1)
    sample = jnp.zeros((1, 8, 8, 3))
    perm = train.epoch_permutation(jax.random.key(1), 256, 0)
    x, y = jnp.asarray(ds.train_images), jnp.asarray(ds.train_labels)

    mesh = parallel.data_mesh()
    x_train, y_train, _, _ = parallel.put_dataset(ds, mesh)
    args = (x_train, y_train, parallel.replicate(perm, mesh), 0)
    out["dataset_replicated"] = x_train.sharding.is_fully_replicated
    for name, host_loop in (("host_loop", True), ("scan", False)):
        ts = train.init_train_state(model.init, tx, jax.random.key(0), sample)
        ref, m_ref = train.make_train_chunk(step, 32, 3, host_loop=host_loop)(ts, x, y, perm, 0)
        ts = train.init_train_state(model.init, tx, jax.random.key(0), sample)
        bs = parallel.batch_sharding(mesh)
        run = train.make_train_chunk(step, 32, 3, host_loop=host_loop, batch_sharding=bs)
        got, m_got = run(parallel.replicate(ts, mesh), *args)
        out[name] = {
            "state_diff": _max_diff(
                (got.params, got.state, got.opt_state), (ref.params, ref.state, ref.opt_state)
            ),
            "loss_diff": _max_diff(m_got["loss_sum"], m_ref["loss_sum"]),
            "count": int(m_got["count"]),
            "step": int(got.step),
            "replicated": all(
                a.sharding.is_fully_replicated and len(a.sharding.device_set) == 8
                for a in jax.tree.leaves(got)
            ),
        }
        if not host_loop:
            # The partitioned program's convolutions see 32 / 8 = 4 images per device.
            hlo = run.lower(got, *args).compile().as_text()
            out["scan"]["per_device_batch"] = "f32[4,8,8,3]" in hlo
            out["scan"]["global_batch"] = "f32[32,8,8,3]" in hlo
    out["batch_spec"] = str(parallel.batch_sharding(mesh).spec)

    # fit: automatic data parallelism on 8 devices == fit forced onto one device.
    hp = Hparams(epochs=1, batch_size=32, peak_lr=0.05, crop_pad=1)
    one = loop.fit(model.init, model.apply, ds, hp, seed=3, progress=False, data_parallel=False)
    many = loop.fit(model.init, model.apply, ds, hp, seed=3, progress=False)
    out["fit"] = {
        "params_diff": _max_diff(many.state.params, one.state.params),
        "loss": [one.history[0]["loss"], many.history[0]["loss"]],
        "acc": [one.test_accuracy, many.test_accuracy],
        "devices": [
            len(jax.tree.leaves(r.state.params)[0].sharding.device_set) for r in (one, many)
        ],
    }
    try:
        bad = Hparams(epochs=1, batch_size=12)
        loop.fit(model.init, model.apply, ds, bad, progress=False)
        out["not_divisible_error"] = None
    except ValueError as e:
        out["not_divisible_error"] = str(e)
    out["fit_runs"] = {(0.05, 3): one}
    return out


def check_sweep(fit_runs: dict) -> dict:
    """A sweep (2 seeds x 2 learning rates) sharded over the run axis == sequential fits."""
    ds, model = _setup()
    out: dict = {}
    hp = Hparams(epochs=1, batch_size=32, peak_lr=0.05, crop_pad=1, steps_per_call=4)
    fit_runs[(0.2, 0)] = loop.fit(
        model.init, model.apply, ds, dataclasses.replace(hp, peak_lr=0.2), seed=0,
        progress=False, data_parallel=False,
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = sweep.fit_sweep(
            model.init, model.apply, ds, hp, [3, 0], lrs=[0.05, 0.2], progress=False
        )
    out["sweep"] = {
        "grid": [[r.peak_lr, r.seed] for r in runs],
        "warnings": [str(w.message) for w in caught if "sweep" in str(w.message)],
        "vs_fit": {
            f"{lr}/{seed}": {
                "params_diff": _max_diff(r.state.params, fit_runs[(lr, seed)].state.params),
                "loss": [r.history[0]["loss"], fit_runs[(lr, seed)].history[0]["loss"]],
                "acc": [r.test_accuracy, fit_runs[(lr, seed)].test_accuracy],
            }
            for r in runs
            for lr, seed in [(r.peak_lr, r.seed)]
            if (lr, seed) in fit_runs
        },
    }  # fmt: skip
    # The chunk itself: stacked state in, stacked state out, run axis split over 8 devices.
    tx = optim.make_optimizer(peak_lr=0.05, total_steps=8)
    step = train.make_train_step(model.apply, tx, ds.mean, ds.std, crop_pad=1)
    mesh = parallel.data_mesh(axis_name="runs")
    rs = parallel.batch_sharding(mesh)
    sample = jnp.zeros((1, 8, 8, 3))
    ts = sweep.stack(
        [train.init_train_state(model.init, tx, jax.random.key(k), sample) for k in range(8)]
    )
    perms = jnp.stack([train.epoch_permutation(jax.random.key(k), 256, 0) for k in range(8)])
    x_train, y_train, _, _ = parallel.put_dataset(ds, mesh)
    run = sweep.make_sweep_chunk(step, 32, 1, run_sharding=rs)
    got, m = run(parallel.put(ts, rs), x_train, y_train, parallel.put(perms, rs), 0)
    out["chunk"] = {
        "run_sharded": all(
            a.sharding.spec == rs.spec
            and len(a.sharding.device_set) == 8
            and a.addressable_shards[0].data.shape[0] == 1
            for a in jax.tree.leaves(got)
        ),
        "metrics_shape": list(m["count"].shape),
    }
    placement = {}
    for n in (8, 16, 4, 6, 7):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, sharding = sweep.run_placement(n)
        placement[n] = {
            "devices": 1 if sharding is None else len(sharding.device_set),
            "warned": any("sweep" in str(w.message) for w in caught),
        }
    out["placement"] = placement
    return out


@functools.cache
def results() -> dict:
    """Runs every check in a subprocess with 8 CPU devices (once per session); its JSON."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    # The default persistent compilation cache, as launch.py and tests/conftest.py use it.
    cfg = config.defaults()
    if cfg.compile_cache:
        env.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(cfg.compile_cache).expanduser()))
        env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", str(cfg.compile_cache_min_s))
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve())],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=Path(__file__).resolve().parents[1],
    )
    if proc.returncode != 0:
        raise RuntimeError(f"multi-device checks failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_process(workdir: str) -> dict:
    """One of several processes (see test_parallel.py): fit with a workdir, then a sweep."""
    hp = Hparams(epochs=2, batch_size=32, peak_lr=0.05, crop_pad=1, steps_per_call=4)
    ds, model = _setup()
    r = loop.fit(model.init, model.apply, ds, hp, seed=3, progress=False, workdir=workdir)
    runs = sweep.fit_sweep(model.init, model.apply, ds, hp, [0, 1, 2, 3], progress=False)
    return {
        "process": jax.process_index(),
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "loss": r.history[-1]["loss"],
        "acc": r.test_accuracy,
        "sweep_acc": [run.test_accuracy for run in runs],
    }


if __name__ == "__main__" and sys.argv[1:2] == ["process"]:
    # Must run before anything touches JAX (importing it is fine).
    assert parallel.maybe_initialize_distributed()
    print(json.dumps(check_process(sys.argv[2])))
elif __name__ == "__main__":
    out = {"devices": jax.device_count()}
    out.update(check_parallel())
    out.update(check_sweep(out.pop("fit_runs")))
    print(json.dumps(out))
