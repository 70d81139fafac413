"""procpool: independent runs as processes, at most one per slot, pinned to one GPU each."""

import os
import sys
import time

import pytest

from jaxwm.errors import JobError
from jaxwm.runner import procpool

# Each job records its GPU pin and its start/end times, so overlap can be checked.
SCRIPT = (
    "import os, sys, time; t = time.time(); time.sleep(0.3); "
    "print(os.environ.get('CUDA_VISIBLE_DEVICES', '-'), t, time.time())"
)


def _jobs(tmp_path, n):
    return [
        procpool.Job(f"job{i}", [sys.executable, "-c", SCRIPT], tmp_path / f"job{i}" / "log.txt")
        for i in range(n)
    ]


@pytest.mark.parametrize("slots", [1, 2])
def test_at_most_slots_jobs_run_at_once_each_pinned_to_its_gpu(tmp_path, slots):
    jobs = _jobs(tmp_path, 4)
    lines = []
    walls = procpool.run_jobs(jobs, slots, pin_gpus=True, say=lines.append)
    assert len(walls) == 4 and all(w > 0.3 for w in walls)
    spans = []
    for job in jobs:
        gpu, start, end = job.log.read_text().split()
        assert gpu in {str(i) for i in range(slots)}
        spans.append((float(start), float(end)))
    # At no job's start are more than `slots` jobs running, and the slots are used.
    running = [sum(a <= s < b for a, b in spans) for s, _ in spans]
    assert max(running) == slots, running
    assert sum("start" in line for line in lines) == 4
    assert sum("done" in line for line in lines) == 4


def test_unpinned_jobs_see_the_callers_environment(tmp_path):
    jobs = _jobs(tmp_path, 1)
    procpool.run_jobs(jobs, 1, pin_gpus=False, env={"PATH": "/usr/bin"}, say=lambda _: None)
    assert jobs[0].log.read_text().split()[0] == "-"


def test_a_failed_job_is_named_with_its_log_after_the_others_finish(tmp_path):
    bad = procpool.Job(
        "bad", [sys.executable, "-c", "print('oh no'); raise SystemExit(3)"], tmp_path / "bad.txt"
    )
    jobs = [bad, *_jobs(tmp_path, 2)]
    t0 = time.perf_counter()
    with pytest.raises(JobError, match=r"job bad exited with status 3(.|\n)*oh no"):
        procpool.run_jobs(jobs, 2, pin_gpus=False, say=lambda _: None)
    assert time.perf_counter() - t0 > 0.3  # the good jobs were not abandoned
    assert all(j.log.read_text().strip() for j in jobs[1:])


def test_slots_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="slots"):
        procpool.run_jobs(_jobs(tmp_path, 1), 0, pin_gpus=False)


@pytest.mark.parametrize("user_value", [None, "true"])
def test_a_dispatcher_leaves_gpu_memory_to_its_jobs(tmp_path, monkeypatch, user_value):
    var = "XLA_PYTHON_CLIENT_PREALLOCATE"
    for name in (var, "JAXWM_DISPATCHER_SET_PREALLOCATE"):  # restored after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    if user_value is not None:
        monkeypatch.setenv(var, user_value)
    procpool.leave_devices_to_jobs()
    assert os.environ[var] == (user_value or "false")  # this process: no preallocation
    job = procpool.Job(
        "env", [sys.executable, "-c", f"import os; print(os.environ.get('{var}', '-'))"],
        tmp_path / "env.txt",
    )  # fmt: skip
    procpool.run_jobs([job], 1, pin_gpus=False, say=lambda _: None)
    assert job.log.read_text().strip() == (user_value or "-")  # the job: JAX's default
