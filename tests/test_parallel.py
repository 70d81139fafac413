"""Data parallelism (jit + NamedSharding on a mesh) and multi-process launch detection.

The 8-device checks run in a subprocess (see tests/_multidevice.py), because the device count
is fixed when JAX starts and this process already has one CPU device.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import _multidevice
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxwm import data
from jaxwm.engine import parallel

TOL = 1.0  # _multidevice._max_diff <= 1 means allclose(rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def multi():
    out = _multidevice.results()
    assert out["devices"] == 8
    return out


@pytest.mark.parametrize("path", ["host_loop", "scan"])
def test_sharded_chunk_equals_single_device_chunk(multi, path):
    r = multi[path]
    assert r["state_diff"] <= TOL  # params, BatchNorm statistics and optimizer state
    assert r["loss_diff"] <= TOL
    assert (r["count"], r["step"]) == (3 * 32, 3)
    assert r["replicated"]  # new state replicated on all 8 devices


def test_batch_is_sharded_and_dataset_replicated(multi):
    assert multi["batch_spec"] == "P('data',)"
    assert multi["dataset_replicated"]
    # The compiled, partitioned program convolves 32 / 8 = 4 images per device, never 32.
    assert multi["scan"]["per_device_batch"] and not multi["scan"]["global_batch"]


def test_fit_uses_all_devices_and_matches_one_device(multi):
    r = multi["fit"]
    assert r["devices"] == [1, 8]
    assert r["params_diff"] <= TOL
    np.testing.assert_allclose(r["loss"][1], r["loss"][0], rtol=1e-4)
    assert r["acc"][0] == r["acc"][1]


def test_batch_not_divisible_error_names_setting_and_device_count(multi):
    msg = multi["not_divisible_error"]
    assert msg is not None
    assert "train.batch_size=12" in msg and "8 devices" in msg and "8 or 16" in msg


def test_one_device_helpers():
    mesh = parallel.data_mesh()
    assert mesh.axis_names == ("data",) and mesh.devices.size == jax.device_count() == 1
    parallel.check_divisible(7, mesh)  # anything divides over one device
    tree = parallel.replicate({"w": jnp.ones(3)}, mesh)
    assert tree["w"].sharding.is_fully_replicated
    ds = data.load_dataset("synthetic:train=32,test=8,classes=2")
    x_train, y_train, x_test, y_test = parallel.put_dataset(ds, mesh)
    assert x_train.dtype == jnp.uint8 and y_train.dtype == jnp.int32
    assert isinstance(x_test, jax.Array) and x_test.sharding.is_fully_replicated
    np.testing.assert_array_equal(parallel.to_host(x_train), ds.train_images)
    assert parallel.is_primary()
    np.testing.assert_array_equal(parallel.to_host(y_test), ds.test_labels)


def test_check_divisible_message():
    class FakeMesh:  # only ``devices.size`` is read
        devices = np.empty(4)

    parallel.check_divisible(8, FakeMesh())
    with pytest.raises(ValueError, match=r"sweep\.runs=3 .* 4 devices .*\(e\.g\. 4\)"):
        parallel.check_divisible(3, FakeMesh(), what="sweep.runs")


_LAUNCH_VARS = [
    "JAXWM_DISTRIBUTED", "JAX_COORDINATOR_ADDRESS", "JAXWM_NUM_PROCESSES", "JAX_NUM_PROCESSES",
    "JAXWM_PROCESS_ID", "JAX_PROCESS_ID", "JOB_COMPLETION_INDEX", "SLURM_PROCID",
    "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
]  # fmt: skip


@pytest.mark.parametrize(
    "env,expected",
    [
        ({}, None),
        ({"SLURM_NTASKS": "4"}, None),  # salloc shell, no srun: one process
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, None),
        ({"SLURM_PROCID": "1", "SLURM_NTASKS": "4"}, {}),  # srun: JAX auto-detects the rest
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "1"}, None),
        ({"OMPI_COMM_WORLD_SIZE": "2"}, {}),
        ({"JAXWM_NUM_PROCESSES": "1"}, None),
        (
            {
                "JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234",
                "JAXWM_NUM_PROCESSES": "2",
                "JOB_COMPLETION_INDEX": "1",
            },
            {"num_processes": 2, "process_id": 1},
        ),  # fmt: skip
        ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAXWM_DISTRIBUTED": "0"}, None),
    ],
)
def test_maybe_initialize_distributed(monkeypatch, env, expected):
    for name in _LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    assert parallel.maybe_initialize_distributed() is (expected is not None)
    assert calls == ([] if expected is None else [expected])


def test_maybe_initialize_distributed_explains_late_call(monkeypatch):
    monkeypatch.setenv("JAXWM_NUM_PROCESSES", "2")
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)

    def late(**kw):
        raise RuntimeError("must be called before any JAX computations are executed")

    monkeypatch.setattr(jax.distributed, "initialize", late)
    with pytest.raises(RuntimeError, match="before anything else uses JAX"):
        parallel.maybe_initialize_distributed()


@pytest.mark.slow
def test_two_processes_train_together_and_write_once(tmp_path):
    """Two processes x 2 CPU devices, joined by jax.distributed (about 40 s on 2 cores)."""
    if os.environ.get("JAXWM_SLOW_TESTS") != "1":
        pytest.skip("slow: set JAXWM_SLOW_TESTS=1 to run two cooperating processes")
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    script = Path(_multidevice.__file__).resolve()
    procs = []
    for pid in range(2):
        env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COORDINATOR_ADDRESS=f"localhost:{port}")
        env.update(JAXWM_NUM_PROCESSES="2", JAXWM_PROCESS_ID=str(pid))
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        cmd = [sys.executable, str(script), "process", str(tmp_path / "run")]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
    outs = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert [o["process"] for o in outs] == [0, 1]
    assert all(o["processes"] == 2 and o["devices"] == 4 for o in outs)
    assert outs[0]["loss"] == outs[1]["loss"] and outs[0]["sweep_acc"] == outs[1]["sweep_acc"]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]  # written once, by process 0
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["1", "2"]
