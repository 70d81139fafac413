"""Modes ``train`` and ``sweep``, and the helpers every mode shares (data, model, JSON output).

The runner is the only layer that reads a ConfigDict; it translates fields into the explicit
arguments of the library functions and writes results into the run directory:

* ``metrics.jsonl`` -- one JSON line per epoch (loss, accuracies, learning rate, images/s,
  wall time), also as TensorBoard scalars in ``tensorboard/`` with ``tensorboard=True``;
* ``log.txt`` -- what the run logged and printed (:mod:`jaxwm.runner.logfile`);
* ``checkpoints/`` -- resumable training state;
* ``model/`` -- the final model with ``meta.json`` (config, dataset, metrics);
* ``results.json`` -- the run's summary.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from importlib.metadata import version as _version
from pathlib import Path
from typing import Any

import jax
import ml_collections

from jaxwm import data, models, version
from jaxwm.engine import checkpoint, loop, sweep
from jaxwm.engine.hparams import Hparams
from jaxwm.runner import config, fingerprint, tensorboard

log = logging.getLogger(__name__)


def load_data(cfg: ml_collections.ConfigDict) -> data.Dataset:
    """Loads the dataset named by ``cfg.data``."""
    return data.load_dataset(
        cfg.data.source,
        cache_dir=cfg.data.cache_dir or None,
        tfds_data_dir=cfg.data.tfds_data_dir or None,
    )


def build_model(cfg: ml_collections.ConfigDict, num_classes: int) -> models.Model:
    """The ResNet described by ``cfg.model``.

    On a CPU backend bfloat16 compute falls back to float32 with a warning: XLA:CPU emulates
    bf16 convolutions, many times slower than float32 (parameters are float32 either way, so
    checkpoints are interchangeable).
    """
    dtype = cfg.model.dtype
    if dtype != "float32" and jax.default_backend() == "cpu":
        log.warning(
            "model.dtype=%s on CPU: computing in float32 instead (faster on XLA:CPU)", dtype
        )
        dtype = "float32"
    return models.resnet(
        num_classes,
        stage_sizes=tuple(cfg.model.stage_sizes),
        widths=tuple(cfg.model.widths),
        dtype=dtype,
    )


def hparams(section: ml_collections.ConfigDict) -> Hparams:
    """Maps a ``train``-like config section onto :class:`jaxwm.engine.hparams.Hparams`."""
    fields = Hparams.__dataclass_fields__
    return Hparams(**{k: section[k] for k in fields if k in section})


def environment() -> dict[str, Any]:
    """Device and library versions, recorded with every result."""
    dev = jax.devices()[0]
    return {
        "device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}",
        "device_count": jax.device_count(),
        "jax": jax.__version__,
        "flax": _version("flax"),
        "optax": _version("optax"),
        "python": sys.version.split()[0],
        "jaxwm": version.__version__,
        "git_revision": version.git_revision(),
    }


def write_json(path: Path, obj: Any) -> None:
    """Writes ``obj`` as indented JSON atomically (temp file + rename), from process 0 only."""
    if jax.process_index() != 0:
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=float))
    tmp.replace(path)


def run_train(cfg: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Mode ``train``: trains the (victim) model and saves it to ``workdir/model``.

    ``workdir`` is bound to the config's train fingerprint before any checkpoint is read or
    written (:mod:`jaxwm.runner.fingerprint`): a resume with other fields is refused, or with
    ``restart=True`` the earlier run is moved aside.
    """
    t0 = time.perf_counter()
    tensorboard.check_available(cfg.tensorboard)
    fp = fingerprint.bind_train(cfg, workdir)
    ds = load_data(cfg)
    model = build_model(cfg, ds.num_classes)
    print(
        f"data: {ds.name} train {ds.train_images.shape} test {ds.test_images.shape} "
        f"{ds.num_classes} classes | model: {model.name} | device: {environment()['device']}",
        file=sys.stderr,
    )
    with tensorboard.epoch_writer(workdir, enabled=cfg.tensorboard) as on_epoch:
        result = loop.fit(
            model.init,
            model.apply,
            ds,
            hparams(cfg.train),
            seed=cfg.seed,
            workdir=workdir,
            progress=cfg.progress,
            desc="train",
            on_epoch=on_epoch,
        )
    ts = result.state
    summary = {
        "mode": "train",
        "dataset": ds.name,
        "num_classes": ds.num_classes,
        "test_accuracy": result.test_accuracy,
        "epochs": cfg.train.epochs,
        "params": models.count_params(ts.params),
        "wall_s": time.perf_counter() - t0,
        "history": result.history,
        "environment": environment(),
    }
    meta = {
        "config": config.public_dict(cfg),
        "dataset": {"name": ds.name, "source": cfg.data.source, "class_names": ds.class_names},
        "normalization": {"mean": ds.mean, "std": ds.std},
        "metrics": {k: v for k, v in summary.items() if k != "history"},
        "fingerprint": fp,
    }
    checkpoint.save_model(workdir, jax.device_get(ts.params), jax.device_get(ts.state), meta)
    write_json(workdir / "results.json", summary)
    epochs = f"{cfg.train.epochs} epoch" + ("" if cfg.train.epochs == 1 else "s")
    print(
        f"test accuracy {100 * result.test_accuracy:.2f}% after {epochs} "
        f"({summary['wall_s']:.0f} s); model saved to {workdir / 'model'}"
    )
    return summary


def run_sweep(cfg: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Mode ``sweep``: ``sweep.seeds`` x ``sweep.lrs`` victim runs trained at once (vmapped)."""
    t0 = time.perf_counter()
    ds = load_data(cfg)
    model = build_model(cfg, ds.num_classes)
    results = sweep.fit_sweep(
        model.init,
        model.apply,
        ds,
        hparams(cfg.train),
        seeds=tuple(cfg.sweep.seeds),
        lrs=tuple(cfg.sweep.lrs) or None,
        progress=cfg.progress,
    )
    rows = sweep.summarize(results)
    summary = {
        "mode": "sweep",
        "dataset": ds.name,
        "runs": [
            {"seed": r.seed, "peak_lr": r.peak_lr, "test_accuracy": r.test_accuracy}
            for r in results
        ],
        "summary": rows,
        "wall_s": time.perf_counter() - t0,
        "environment": environment(),
    }
    write_json(workdir / "results.json", summary)
    for row in rows:
        print(
            f"peak_lr {row['peak_lr']:g}: test accuracy "
            f"{sweep.format_stat(row['test_accuracy'])} over seeds {row['seeds']}"
        )
    return summary
