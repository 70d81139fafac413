"""Data parallelism and multi-process launch on ``jax.jit`` + ``NamedSharding`` (no ``pmap``).

The layout, chosen for jaxwm's small resident datasets (MNIST/CIFAR fit on every device):

* a 1-D :class:`~jax.sharding.Mesh` over all devices with one axis, ``"data"``;
* parameters, optimizer state and the whole dataset are *replicated* on every device;
* each step gathers its global batch from the replicated dataset and constrains it (and the
  gather indices) to be sharded along ``"data"`` with :func:`jax.lax.with_sharding_constraint`,
  so each device gathers and computes its slice of the batch; XLA inserts the all-reduces of
  gradients, loss and BatchNorm batch statistics, and the updated state is constrained back to
  replicated. The result is the single-device step on the global batch, up to float rounding
  (``train.batch_size`` stays the global batch; each device sees ``batch_size / devices``).

Replicating the dataset costs device memory (CIFAR-10 train set: 150 MB per device) but needs no
per-step host input pipeline and keeps any permutation a cheap on-device gather; sharding the
dataset itself would make a shuffled batch an all-to-all. See :func:`jaxwm.engine.train.make_train_chunk`
(``batch_sharding``) and :func:`jaxwm.engine.loop.fit`, which uses all of this automatically when more
than one device is visible.

Multi-process (several hosts, or one process per GPU under Slurm/Kubernetes): call
:func:`maybe_initialize_distributed` first thing in the program, before any JAX computation;
then ``jax.devices()`` spans all processes, every process runs the same program on the same
(replicated) data, and only :func:`is_primary` writes logs.

Example:
  >>> mesh = data_mesh()
  >>> ts = replicate(ts, mesh)
  >>> arrays = put_dataset(arrays, mesh)
  >>> run = train.make_train_chunk(step, 256, 100, batch_sharding=batch_sharding(mesh))
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxwm.data import Dataset

log = logging.getLogger(__name__)
PyTree = Any
# (train_images, train_labels, test_images, test_labels) on the device(s).
DeviceArrays = tuple[jax.Array, jax.Array, jax.Array, jax.Array]

DATA_AXIS = "data"
# Environment variables of our own launch convention (Kubernetes indexed jobs, plain scripts).
ENV_NUM_PROCESSES = ("JAXWM_NUM_PROCESSES", "JAX_NUM_PROCESSES")
ENV_PROCESS_ID = ("JAXWM_PROCESS_ID", "JAX_PROCESS_ID", "JOB_COMPLETION_INDEX")


def data_mesh(devices: Sequence[jax.Device] | None = None, axis_name: str = DATA_AXIS) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all devices of all processes).

    The axis is ``Auto`` (sharding propagated by the compiler from the constraints we place),
    not ``Explicit``, which newer ``jax.make_mesh`` versions default to.

    Args:
      devices: The devices; None for ``jax.devices()``.
      axis_name: The mesh axis name.

    Returns:
      The mesh.

    Example:
      >>> data_mesh().shape
      {'data': 8}
    """
    devices = list(jax.devices() if devices is None else devices)
    return jax.make_mesh(
        (len(devices),), (axis_name,), axis_types=(AxisType.Auto,), devices=devices
    )


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding that keeps a full copy on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def shard_batch_spec(mesh: Mesh) -> PartitionSpec:
    """The partition spec of a batch: leading axis split over the mesh's (first) axis."""
    return PartitionSpec(mesh.axis_names[0])


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding of a batch (leading axis split over the mesh), for ``make_train_chunk``.

    Example:
      >>> x = jax.lax.with_sharding_constraint(x, batch_sharding(mesh))
    """
    return NamedSharding(mesh, shard_batch_spec(mesh))


def put(tree: PyTree, sharding: jax.sharding.Sharding) -> PyTree:
    """Places every leaf of ``tree`` with ``sharding``; also across processes.

    With one process this is :func:`jax.device_put`. With several, every process must pass the
    same values (as with identical seeds and data); each builds its addressable shards from its
    own host copy, so nothing crosses the network.

    Args:
      tree: Arrays (numpy or jax; with several processes they are fetched to the host first).
      sharding: Where to put them, e.g. :func:`replicated` or :func:`batch_sharding`.

    Returns:
      The placed tree.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def one(x):
        x = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(one, tree)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """A copy of ``tree`` on every device of ``mesh`` (parameters, optimizer state, keys).

    Example:
      >>> ts = replicate(ts, data_mesh())
      >>> ts.params["head"]["kernel"].sharding.is_fully_replicated
      True
    """
    return put(tree, replicated(mesh))


def put_dataset(ds: Dataset, mesh: Mesh | None = None) -> DeviceArrays:
    """A dataset's four arrays on the accelerator: replicated on every device of ``mesh``.

    Args:
      ds: The dataset (host arrays; see :class:`jaxwm.data.Dataset`).
      mesh: The mesh to replicate over (see the module docstring for why); None: the default
        device.

    Returns:
      ``(train_images, train_labels, test_images, test_labels)``; images uint8, labels int32.
    """
    host = [
        np.asarray(jax.device_get(x) if isinstance(x, jax.Array) else x, dtype)
        for x, dtype in (
            (ds.train_images, np.uint8), (ds.train_labels, np.int32),
            (ds.test_images, np.uint8), (ds.test_labels, np.int32),
        )
    ]  # fmt: skip
    placed = jax.device_put(host) if mesh is None else replicate(host, mesh)
    return tuple(placed)


def check_divisible(size: int, mesh: Mesh, what: str = "train.batch_size") -> None:
    """Raises a ValueError naming ``what`` unless ``size`` splits evenly over ``mesh``.

    Example:
      >>> check_divisible(96, data_mesh())   # fine on 8 devices; 100 would raise
    """
    n = mesh.devices.size
    if size % n:
        lower, upper = (size // n) * n, -(-size // n) * n
        options = f"{lower} or {upper}" if lower else f"{upper}"
        raise ValueError(
            f"{what}={size} is not divisible by the {n} devices of the data-parallel mesh; "
            f"use a multiple of {n} (e.g. {options}), or make fewer devices visible "
            "(CUDA_VISIBLE_DEVICES) or pass data_parallel=False"
        )


def to_host(tree: PyTree) -> PyTree:
    """Numpy copies of ``tree``'s leaves, gathering shards that live on other processes."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if x.is_fully_replicated:
                return np.asarray(x.addressable_data(0))
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(one, tree)


def _env_int(names: Sequence[str]) -> int | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return int(value)
            except ValueError:
                raise ValueError(
                    f"environment variable {name}={value!r} is not an integer"
                ) from None
    return None


def multiprocess_launch() -> bool:
    """Whether the environment says this process is one of several launched together.

    Signs, in order: ``JAXWM_DISTRIBUTED=0`` turns detection off; ``JAX_COORDINATOR_ADDRESS``
    set; ``JAXWM_NUM_PROCESSES`` (or ``JAX_NUM_PROCESSES``) > 1; a Slurm job step with more than
    one task (``SLURM_STEP_NUM_TASKS``, else ``SLURM_NTASKS``, together with ``SLURM_PROCID``);
    Open MPI's ``OMPI_COMM_WORLD_SIZE`` > 1. A bare ``salloc`` shell with several tasks but no
    ``srun`` has no ``SLURM_PROCID`` and counts as one process.
    """
    env = os.environ
    if env.get("JAXWM_DISTRIBUTED", "").strip().lower() in ("0", "false", "no", "off"):
        return False
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return True
    num = _env_int(ENV_NUM_PROCESSES)
    if num is not None:
        return num > 1
    if "SLURM_PROCID" in env:
        tasks = _env_int(("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"))
        if tasks is not None and tasks > 1:
            return True
    return (_env_int(("OMPI_COMM_WORLD_SIZE",)) or 1) > 1


def maybe_initialize_distributed() -> bool:
    """Calls :func:`jax.distributed.initialize` when launched as several processes.

    Call it first thing, before any JAX computation (``jax.devices()`` included): JAX can only
    join a multi-process job before its backend starts. It does nothing for a single process,
    so it is safe to call unconditionally. How the processes find each other:

    * Slurm (``srun``) and Open MPI: detected by JAX itself, nothing to set.
    * Kubernetes indexed Job, or any launcher: set ``JAX_COORDINATOR_ADDRESS=host:port``
      (process 0's address), ``JAXWM_NUM_PROCESSES`` and ``JAXWM_PROCESS_ID`` (default: the
      Job's ``JOB_COMPLETION_INDEX``).
    * ``JAXWM_DISTRIBUTED=0`` disables all of this.

    Returns:
      True when this process is part of an initialised multi-process job.

    Example:
      >>> maybe_initialize_distributed()   # top of main(), before anything touches JAX
      False
    """
    if jax.distributed.is_initialized():
        return True
    if not multiprocess_launch():
        return False
    num, pid = _env_int(ENV_NUM_PROCESSES), _env_int(ENV_PROCESS_ID)
    kwargs: dict[str, Any] = {}
    if num is not None:
        kwargs["num_processes"] = num
        # JOB_COMPLETION_INDEX alone is no process id unless the process count came with it.
        if pid is not None:
            kwargs["process_id"] = pid
    log.info("initialising jax.distributed (%s)", kwargs or "auto-detected cluster")
    try:
        jax.distributed.initialize(**kwargs)
    except RuntimeError as e:
        raise RuntimeError(
            f"jax.distributed.initialize failed: {e}. Call "
            "jaxwm.engine.parallel.maybe_initialize_distributed() before anything else uses JAX, or set "
            "JAXWM_DISTRIBUTED=0 to run as a single process."
        ) from e
    log.info(
        "process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True


def is_primary() -> bool:
    """True in process 0, the one that writes logs, metrics and results (always True alone)."""
    return jax.process_index() == 0
