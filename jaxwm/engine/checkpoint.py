"""Checkpoints: resumable training state and saved models, on orbax.

Two kinds of artefact live in a run directory:

* ``<workdir>/checkpoints/<step>/`` -- the training state (a :class:`jaxwm.engine.train.TrainState`
  or any pytree) plus a JSON ``meta`` dict, written by an orbax ``CheckpointManager`` so a
  killed run resumes from its latest checkpoint. Writes are atomic (orbax writes to a temporary
  directory and renames), so a kill during a save leaves the previous checkpoint intact.
* ``<dir>/model/`` -- a finished model: ``{"params", "state"}`` arrays plus ``meta.json``
  (config, metrics, anything JSON). This is what ``embed``, ``attack`` and ``verify`` read.

Example:
  >>> ckpt = Checkpointer("runs/demo/checkpoints")
  >>> ckpt.save(10, ts, {"epoch": 1})
  >>> ts, meta = ckpt.restore(ts)   # latest step; ``ts`` gives the structure and dtypes
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxwm.errors import CheckpointError

PyTree = Any
log = logging.getLogger(__name__)


class Checkpointer:
    """Keeps the latest ``max_to_keep`` training checkpoints in ``directory``.

    Args:
      directory: Folder of step sub-directories; created if needed.
      max_to_keep: How many recent checkpoints to keep.
    """

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 2):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self._mgr = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self._mgr.latest_step()

    def save(self, step: int, state: PyTree, meta: dict[str, Any]) -> None:
        """Saves ``state`` and ``meta`` at ``step`` (asynchronously; see :meth:`wait`)."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        self._mgr.save(step, args=args, force=True)

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
                f"cannot restore checkpoint {self.directory / str(step)}: {type(e).__name__}: {e}. "
                "If it is corrupt or from a different config, move that step directory away to "
                "resume from an earlier one, or use a new --workdir to start afresh."
            ) from e
        return out.state, dict(out.meta)

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self._mgr.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self._mgr.wait_until_finished()
        self._mgr.close()


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
    """
    directory = Path(directory).absolute()
    primary = jax.process_index() == 0
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / "model"
    tmp = directory / "model.tmp"
    if primary and tmp.exists():
        _rmtree(tmp)
    _sync("jaxwm_save_model_begin")
    # Every process takes part in an orbax save (it coordinates them); process 0 writes.
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(tmp / "arrays", {"params": params, "state": state})
        ckptr.wait_until_finished()
    if not primary:
        _sync("jaxwm_save_model_end")
        return final
    (tmp / "meta.json").write_text(json.dumps(_to_jsonable(meta), indent=2, sort_keys=True))
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
        raise CheckpointError(f"cannot read {path / 'meta.json'}: {e}") from e
    try:
        with ocp.StandardCheckpointer() as ckptr:
            tree = ckptr.restore(path / "arrays")
    except Exception as e:  # see Checkpointer.restore
        raise CheckpointError(f"cannot read model arrays in {path / 'arrays'}: {e}") from e
    return tree["params"], tree["state"], meta


def _rmtree(path: Path) -> None:
    shutil.rmtree(path)
