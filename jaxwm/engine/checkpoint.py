"""Checkpoints: resumable training state and saved models, on orbax.

Two kinds of artefact live in a run directory:

* ``<workdir>/checkpoints/<step>/`` -- the training state (a :class:`jaxwm.engine.train.TrainState`
  or any pytree) plus a JSON ``meta`` dict, written by an orbax ``CheckpointManager`` so a
  killed run resumes from its latest checkpoint. Writes are atomic (orbax writes to a temporary
  directory and renames), so a kill during a save leaves the previous checkpoint intact.
  A full disk (``ENOSPC``) during a save is one :class:`~jaxwm.errors.DiskFullError` naming the
  directory; the half-written step is removed and the previous checkpoint stays usable.
* ``<dir>/model/`` -- a finished model: ``{"params", "state"}`` arrays plus ``meta.json``
  (config, metrics, anything JSON). This is what ``embed``, ``attack`` and ``verify`` read.

Example:
  >>> ckpt = Checkpointer("runs/demo/checkpoints")
  >>> ckpt.save(10, ts, {"epoch": 1})
  >>> ts, meta = ckpt.restore(ts)   # latest step; ``ts`` gives the structure and dtypes
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import threading
import weakref
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxwm.errors import CheckpointError, DiskFullError, is_disk_full

PyTree = Any
log = logging.getLogger(__name__)
# Managers not closed yet: an interrupted run finishes (or drops) their pending saves through
# close_all() instead of leaving orbax's background threads to die at interpreter exit.
_OPEN: weakref.WeakSet[Checkpointer] = weakref.WeakSet()
TMP_MARK = ".orbax-checkpoint-tmp"
SPACE_MARGIN = 1 << 18  # bytes of free space kept beyond a checkpoint's size (its metadata)
# How long abandon() waits for a save in flight. An interrupt can land inside orbax's own save
# and leave a wait that never returns; the step then stays half-written and is ignored.
ABANDON_WAIT_S = 30.0
_abandoned = False  # set once a manager was abandoned: orbax's later thread errors are noise


def complete_steps(directory: str | os.PathLike) -> list[int]:
    """The steps of the complete checkpoints in ``directory``, ascending (no orbax manager).

    Orbax writes a step into ``<step>.orbax-checkpoint-tmp*`` and renames it to ``<step>`` once
    complete, so a directory named by a number alone is a complete checkpoint.

    Args:
      directory: A :class:`Checkpointer` directory (missing: no steps).

    Returns:
      The steps, e.g. ``[4, 5]``.
    """
    path = Path(directory)
    if not path.is_dir():
        return []
    return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit() and p.is_dir())


class Checkpointer:
    """Keeps the latest ``max_to_keep`` training checkpoints in ``directory``.

    Args:
      directory: Folder of step sub-directories; created if needed.
      max_to_keep: How many recent checkpoints to keep.
    """

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 2):
        self.directory = Path(directory).absolute()
        # cleanup_tmp_directories: a step cut short by a kill or a full disk is removed on the
        # next start rather than left to hold disk space.
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True
        )
        self._mgr = ocp.CheckpointManager(self.directory, options=options)
        _OPEN.add(self)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self._mgr.latest_step()

    def save(self, step: int, state: PyTree, meta: dict[str, Any]) -> None:
        """Saves ``state`` and ``meta`` at ``step`` (asynchronously; see :meth:`wait`)."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        with self._disk_full_guard():
            self._check_space(state)
            self._mgr.save(step, args=args, force=True)

    def _check_space(self, state: PyTree) -> None:
        """Refuses to start a save the disk cannot hold, before orbax writes anything.

        Orbax writes a checkpoint with many concurrent writers; when the disk fills up midway
        they fail one by one, each with a traceback. A step needs about as much space as the
        previous one (or the state's raw bytes, for the first), plus a margin for metadata.
        One process: in a multi-process run every process would have to agree to stop.
        """
        if jax.process_count() > 1:
            return
        steps = complete_steps(self.directory)
        last = _disk_bytes(self.directory / str(steps[-1])) if steps else 0
        raw = sum(int(getattr(x, "nbytes", 0)) for x in jax.tree.leaves(state))
        need = max(last, raw) + SPACE_MARGIN
        free = shutil.disk_usage(self.directory).free
        if free < need:
            raise OSError(errno.ENOSPC, f"{free:,} bytes free, a checkpoint needs ~{need:,}")

    def restore(self, target: PyTree, step: int | None = None) -> tuple[PyTree, dict[str, Any]]:
        """Restores the checkpoint at ``step`` (default: latest) into the structure of ``target``.

        Args:
          target: A pytree with the structure, shapes and dtypes to restore (e.g. a freshly
            initialised state); NamedTuples such as optax states are kept.
          step: Which step; None for the latest.

        Raises:
          CheckpointError: no checkpoint, or it is corrupt / from another model or config.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
        )
        try:
            out = self._mgr.restore(step, args=args)
        except Exception as e:  # orbax raises many types; the user needs the path and a way out
            raise CheckpointError(
                f"cannot restore checkpoint {self.directory / str(step)}: {_brief(e)}. "
                "If it is corrupt or from a different config, move that step directory away to "
                "resume from an earlier one, or use a new --workdir to start afresh."
            ) from e
        return out.state, dict(out.meta)

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk.

        Raises:
          DiskFullError: a pending save ran out of disk space (see :meth:`save`).
        """
        with self._disk_full_guard():
            self._mgr.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager.

        Raises:
          DiskFullError: a pending save ran out of disk space (see :meth:`save`).
        """
        _OPEN.discard(self)
        with self._disk_full_guard():
            self._mgr.wait_until_finished()
        self._mgr.close()

    @contextlib.contextmanager
    def _disk_full_guard(self):
        """Turns orbax's errors for a full disk (raised by the save that waits on the failed
        one) into one DiskFullError; drops the half-written step so the disk is not left full."""
        try:
            yield
        except Exception as e:
            if not is_disk_full(e):
                raise
            self.abandon()
            steps = complete_steps(self.directory)
            kept = (
                f"the last complete checkpoint, {self.directory / str(steps[-1])}, is intact"
                if steps
                else "no checkpoint was complete yet"
            )
            raise DiskFullError(
                f"disk full (no space left on device) while writing a checkpoint in "
                f"{self.directory}; {kept}. Free some space (or move the run directory to a "
                "larger disk), then run the same command to resume"
            ) from None

    def abandon(self) -> None:
        """Releases the manager without raising: waits for (or gives up on) pending saves and
        removes half-written steps. For runs that already failed or were interrupted."""
        global _abandoned
        _OPEN.discard(self)
        _abandoned = True
        # Orbax logs each background failure with a traceback; the caller reports it once.
        absl_log = logging.getLogger("absl")
        level = absl_log.level
        absl_log.setLevel(logging.CRITICAL)
        try:
            _bounded(self._finish, ABANDON_WAIT_S)
        finally:
            absl_log.setLevel(level)
        if jax.process_index() == 0 and self.directory.is_dir():
            for p in self.directory.iterdir():
                if TMP_MARK in p.name:
                    shutil.rmtree(p, ignore_errors=True)

    def _finish(self) -> None:
        for finish in (self._mgr.wait_until_finished, self._mgr.close):
            with contextlib.suppress(Exception):
                finish()


def _bounded(fn: Any, seconds: float) -> None:
    """Runs ``fn`` in a daemon thread for at most ``seconds``; a call that never returns is
    left behind (the thread cannot keep the interpreter alive)."""
    done = threading.Thread(target=fn, name="jaxwm-abandon", daemon=True)
    done.start()
    done.join(seconds)
    if done.is_alive():
        log.warning("checkpoint: a save in flight did not finish within %.0f s; left", seconds)


class QuietFailedSaves(logging.Filter):
    """Drops orbax's error logs (tracebacks from its background threads) about a full disk or
    an interrupt: :class:`Checkpointer` reports those once, as a :class:`DiskFullError`, and the
    runner reports an interrupt itself. Every other record passes.

    Example:
      >>> logging.getLogger("absl").addFilter(QuietFailedSaves())
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or f"{os.sep}orbax{os.sep}" not in record.pathname:
            return True
        if _abandoned:  # the run already failed or was interrupted, and says so once
            return False
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, KeyboardInterrupt) or (exc is not None and is_disk_full(exc)):
            return False
        msg = record.getMessage()
        return not (is_disk_full(Exception(msg)) or "KeyboardInterrupt" in msg)


def close_all() -> None:
    """Abandons every open :class:`Checkpointer` (see :meth:`Checkpointer.abandon`).

    A run stopped by Ctrl-C or an error leaves its manager open with saves in flight; this
    finishes what it can, so the last complete checkpoint is on disk and no orbax thread dies
    noisily at exit.
    """
    for ckpt in list(_OPEN):
        ckpt.abandon()


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic | jax.Array) and np.ndim(obj) == 0:
        return np.asarray(obj).item()
    return obj


def save_model(directory: str | os.PathLike, params: PyTree, state: PyTree, meta: dict) -> Path:
    """Saves a finished model as ``<directory>/model`` (arrays) and ``meta.json``.

    An existing model at that place is replaced only after the new one is fully written.

    Args:
      directory: Parent folder (a run directory).
      params, state: The model's parameters and state.
      meta: JSON-serialisable metadata: config, metrics, dataset, trigger manifest...

    Returns:
      The model directory.

    Raises:
      DiskFullError: the disk filled up; the partial copy is removed, an older model kept.
    """
    directory = Path(directory).absolute()
    primary = jax.process_index() == 0
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / "model"
    tmp = directory / "model.tmp"
    if primary and tmp.exists():
        _rmtree(tmp)
    _sync("jaxwm_save_model_begin")
    try:
        # Every process takes part in an orbax save (it coordinates them); process 0 writes.
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(tmp / "arrays", {"params": params, "state": state})
            ckptr.wait_until_finished()
        if primary:
            (tmp / "meta.json").write_text(json.dumps(_to_jsonable(meta), indent=2, sort_keys=True))
    except Exception as e:
        if not is_disk_full(e):
            raise
        if primary:
            shutil.rmtree(tmp, ignore_errors=True)  # give the space back
        kept = f"the model already at {final} is unchanged" if final.exists() else "none was"
        raise DiskFullError(
            f"disk full (no space left on device) while saving the model to {final}; {kept}. "
            "Free some space (or move the run directory to a larger disk), then run the same "
            "command again"
        ) from None
    if not primary:
        _sync("jaxwm_save_model_end")
        return final
    if final.exists():
        old = directory / "model.old"
        if old.exists():
            _rmtree(old)
        final.rename(old)
        tmp.rename(final)
        _rmtree(old)
    else:
        tmp.rename(final)
    _sync("jaxwm_save_model_end")
    return final


def _sync(name: str) -> None:
    """Barrier across processes (no-op in a single process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def load_model(path: str | os.PathLike) -> tuple[PyTree, PyTree, dict]:
    """Loads ``(params, state, meta)`` saved by :func:`save_model`.

    Args:
      path: The ``model`` directory, or the run directory that contains it.

    Raises:
      CheckpointError: with the path and what to do, when missing or unreadable.
    """
    path = Path(path).absolute()
    if (path / "model").is_dir():
        path = path / "model"
    if not (path / "arrays").is_dir() or not (path / "meta.json").is_file():
        raise CheckpointError(
            f"no saved model at {path} (expected 'arrays/' and 'meta.json'); pass the directory "
            "of a finished run (launch.py mode=train/embed writes <workdir>/model)"
        )
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"cannot read {path / 'meta.json'}: {_brief(e)}; the saved model is damaged: point to "
            "another run, or re-create this one (run its mode=train/embed again)"
        ) from e
    try:
        with ocp.StandardCheckpointer() as ckptr:
            tree = ckptr.restore(path / "arrays")
    except Exception as e:  # see Checkpointer.restore
        raise CheckpointError(
            f"cannot read model arrays in {path / 'arrays'}: {_brief(e)}; the saved model is "
            "damaged: point to another run, or re-create this one (run its mode=train/embed again)"
        ) from e
    return tree["params"], tree["state"], meta


def _brief(e: BaseException, limit: int = 300) -> str:
    """``e`` as one line of at most ``limit`` characters (orbax's messages span many lines)."""
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _disk_bytes(path: Path) -> int:
    """Total size of the files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _rmtree(path: Path) -> None:
    shutil.rmtree(path)
