"""The mode table and :func:`run`: what ``launch.py`` calls with a config and a run directory.

Every mode is a function ``(cfg, workdir) -> summary`` in the module that implements it; this
module only maps ``cfg.mode`` to it, so the mode modules never import each other through here.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections

from jaxwm.engine import compile_stats, parallel
from jaxwm.errors import ConfigError
from jaxwm.runner import (
    attack_runs,
    config,
    experiments,
    fingerprint,
    lock,
    procpool,
    report,
    runs,
    verify_runs,
)

Mode = Callable[[ml_collections.ConfigDict, Path], dict[str, Any]]

MODES: dict[str, Mode] = {
    "train": experiments.run_train,
    "sweep": experiments.run_sweep,
    "embed": runs.run_embed,
    "digest": verify_runs.run_digest,
    "export": verify_runs.run_export,
    "verify": verify_runs.run_verify,
    "pipeline": runs.run_pipeline,
    "attack": attack_runs.run_attack,
    "reproduce": report.run_reproduce,
}


def run(cfg: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Validates ``cfg`` and runs its ``mode`` in ``workdir``."""
    config.validate(cfg)
    if cfg.mode == "reproduce" and cfg.reproduce.processes != 1:
        procpool.leave_devices_to_jobs()  # before JAX touches a GPU: the units run elsewhere
    if jax.process_count() > 1 and cfg.mode != "train":
        raise ConfigError(
            f"mode {cfg.mode!r} runs in a single process; multi-process launches support "
            "mode=train (data-parallel victim training) only"
        )
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # One writer per run directory (process 0 of a multi-process launch speaks for all).
    held = lock.workdir_lock(workdir) if parallel.is_primary() else contextlib.nullcontext()
    with held:
        return _run_locked(cfg, workdir)


def _run_locked(cfg: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    fingerprint.prepare(cfg, workdir)  # before config.json is rewritten (it may be the record)
    experiments.write_json(workdir / "config.json", config.public_dict(cfg))
    if cfg.compile_cache:
        compile_stats.enable_persistent_cache(cfg.compile_cache, cfg.compile_cache_min_s)
    with compile_stats.CompileStats() as stats:
        result = MODES[cfg.mode](cfg, workdir)
    # Written after the run: a second run of the same config should show cache hits here.
    experiments.write_json(workdir / "compile_stats.json", stats.as_dict())
    if parallel.is_primary():
        print(f"compilation: {stats}", file=sys.stderr)
    return result
