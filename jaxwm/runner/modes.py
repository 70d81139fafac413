"""The mode table and :func:`run`: what ``launch.py`` calls with a config and a run directory.

Every mode is a function ``(cfg, workdir) -> summary`` in the module that implements it; this
module only maps ``cfg.mode`` to it, so the mode modules never import each other through here.

:func:`run` also turns the failures a user causes into one :class:`~jaxwm.errors.JaxwmError`
each, with nothing already written left corrupt: a ``--workdir`` that is a file or not writable,
config errors that :mod:`jaxwm.runner.preflight` finds before any training, a full disk
(:class:`~jaxwm.errors.DiskFullError`, the last complete checkpoint kept) and Ctrl-C
(:class:`~jaxwm.errors.RunInterrupted`, saying where the same command resumes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections

from jaxwm.engine import checkpoint, compile_stats, parallel
from jaxwm.errors import ConfigError, DiskFullError, RunInterrupted, is_disk_full
from jaxwm.runner import (
    attack_runs,
    attack_store,
    config,
    experiments,
    fingerprint,
    lock,
    logfile,
    preflight,
    procpool,
    report,
    runs,
    study,
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
    "study": study.run_study,
}


def run(cfg: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Validates ``cfg`` and runs its ``mode`` in ``workdir``.

    Args:
      cfg: The run's config.
      workdir: The run directory (created if missing).

    Returns:
      The mode's summary.

    Raises:
      JaxwmError: every failure a user can fix, in one line: a bad config or ``workdir``
        (before any work), a full disk (:class:`DiskFullError`), Ctrl-C (:class:`RunInterrupted`,
        naming the last complete checkpoint and the command that resumes).
    """
    config.validate(cfg)
    if cfg.mode == "reproduce" and cfg.reproduce.processes != 1:
        procpool.leave_devices_to_jobs()  # before JAX touches a GPU: the units run elsewhere
    if cfg.mode == "study" and cfg.study.workers > 1:
        # This process and its workers share the devices: none may take most of a GPU's memory
        # up front (the workers inherit the setting).
        procpool.leave_devices_to_jobs()
    if jax.process_count() > 1 and cfg.mode != "train":
        raise ConfigError(
            f"mode {cfg.mode!r} runs in a single process; multi-process launches support "
            "mode=train (data-parallel victim training) only"
        )
    workdir = Path(workdir)
    _make_workdir(workdir)
    # log.txt: INFO records and printed lines, the secret never (process 0 writes it).
    redact = (cfg.watermark.secret, os.environ.get(config.SECRET_ENV, ""))
    primary = parallel.is_primary()
    with logfile.run_log(workdir, redact=redact) if primary else contextlib.nullcontext():
        return _run_logged(cfg, workdir)


def _run_logged(cfg: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    # One writer per run directory (process 0 of a multi-process launch speaks for all).
    held = lock.workdir_lock(workdir) if parallel.is_primary() else contextlib.nullcontext()
    quiet = checkpoint.QuietFailedSaves()  # orbax's tracebacks for what we report in one line
    logging.getLogger("absl").addFilter(quiet)
    try:
        preflight.check(cfg)  # before anything trains: what would fail later fails now
        with held:
            return _run_locked(cfg, workdir)
    except KeyboardInterrupt:
        checkpoint.close_all()  # finish the save in flight: the last checkpoint is complete
        raise RunInterrupted(resume_hint(cfg, workdir)) from None
    except DiskFullError:
        raise
    except Exception as e:
        if not is_disk_full(e):
            raise
        where = getattr(e, "filename", None) or f"a file in {workdir}"
        raise DiskFullError(
            f"disk full (no space left on device) while writing {where}; the files "
            f"written before it are intact. Free some space, then run the same command again: "
            f"{_same_command()}"
        ) from None
    finally:
        checkpoint.close_all()  # no orbax thread left to die noisily at exit
        logging.getLogger("absl").removeFilter(quiet)


def _make_workdir(workdir: Path) -> None:
    """Creates the run directory, or fails in one line when it cannot be one."""
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(
            f"--workdir {str(workdir)!r} is an existing file; pass a directory (created if missing)"
        )
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir):
            pass
    except OSError as e:
        raise ConfigError(
            f"--workdir {str(workdir)!r} cannot be created or written ({e.strerror or e}); pass "
            "a directory in a writable location"
        ) from None


def _enable_compile_cache(cfg: ml_collections.ConfigDict) -> None:
    """Turns on the persistent compilation cache, or warns and runs without it.

    The cache only saves compile time; results are the same without it, so a directory that
    cannot be written (a read-only home, a path that is a file) costs a warning, not the run.
    """
    path = Path(cfg.compile_cache).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        print(
            f"warning: compile_cache {str(path)!r} is not a writable directory "
            f"({e.strerror or e}); running without the persistent compilation cache (set "
            "--config.compile_cache to a writable directory, or '' to turn it off)",
            file=sys.stderr,
        )
        return
    compile_stats.enable_persistent_cache(path, cfg.compile_cache_min_s)


def resume_hint(cfg: ml_collections.ConfigDict, workdir: Path) -> str:
    """What an interrupted run in ``workdir`` kept, and the command that resumes it.

    Args:
      cfg: The run's config.
      workdir: Its run directory.

    Returns:
      One line: the complete training checkpoints (directory and epoch) and finished models
      found under ``workdir``, then the command.
    """
    kept = []
    for ckpt_dir in [workdir / "checkpoints", *sorted(workdir.glob("*/checkpoints"))]:
        steps = checkpoint.complete_steps(ckpt_dir)
        if steps:
            kept.append(
                f"training checkpoint {ckpt_dir / str(steps[-1])} "
                f"(epoch {steps[-1]}/{cfg.train.epochs})"
            )
    models = [workdir / "model", *sorted(workdir.glob("*/model"))]
    kept += [f"finished model {m}" for m in models if (m / "meta.json").is_file()]
    records = workdir / attack_store.FILE
    if records.is_file():  # mode attack: a rerun skips the points recorded there
        kept.append(f"{len(attack_store.read(records))} attack records in {records}")
    where = (
        f"{workdir} keeps the last complete {', '.join(kept)}"
        if kept
        else f"no checkpoint was complete yet in {workdir}"
    )
    return f"interrupted; {where}. To resume, run the same command: {_same_command()}"


def _same_command() -> str:
    argv = list(sys.argv)
    return shlex.join(["python", *argv] if argv and argv[0].endswith(".py") else argv)


def _run_locked(cfg: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    fingerprint.prepare(cfg, workdir)  # before config.json is rewritten (it may be the record)
    experiments.write_json(workdir / "config.json", config.public_dict(cfg))
    if cfg.compile_cache:
        _enable_compile_cache(cfg)
    with compile_stats.CompileStats() as stats:
        result = MODES[cfg.mode](cfg, workdir)
    # Written after the run: a second run of the same config should show cache hits here.
    experiments.write_json(workdir / "compile_stats.json", stats.as_dict())
    if parallel.is_primary():
        print(f"compilation: {stats}", file=sys.stderr)
    return result
