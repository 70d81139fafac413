"""Independent runs as separate processes, at most one per device at a time.

Runs whose shapes differ (MNIST and CIFAR victims, other architectures) cannot share one
vmapped program (see :mod:`jaxwm.engine.sweep` for those that can), so a study with several GPUs runs
them as separate processes: each process is given one slot, and on GPUs slot ``i`` sees only
GPU ``i`` (``CUDA_VISIBLE_DEVICES``), so every run has a whole device to itself and XLA's
memory preallocation never collides. Without GPUs the slots only bound the number of
concurrent processes (how the tests run it on CPU).

Example:
  >>> jobs = [Job(f"seed{s}", [sys.executable, "train.py", f"--seed={s}"], Path(f"log{s}.txt"))
  ...         for s in range(8)]
  >>> run_jobs(jobs, slots=4, pin_gpus=True)  # 8 runs, 4 GPUs, 2 rounds
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import queue
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from jaxwm.errors import JobError

_PREALLOCATE = "XLA_PYTHON_CLIENT_PREALLOCATE"
_MARK = "JAXWM_DISPATCHER_SET_PREALLOCATE"  # set when leave_devices_to_jobs changed _PREALLOCATE


def leave_devices_to_jobs() -> None:
    """Keeps a dispatching process from preallocating GPU memory its jobs will need.

    JAX preallocates most of a GPU's memory in every process that initialises it; a process
    that only starts jobs must not take GPU 0's memory from the job pinned there. Call this
    before JAX initialises its backends; :func:`run_jobs` gives the jobs the setting they would
    have had (a value the user chose is kept everywhere).
    """
    if _PREALLOCATE not in os.environ:
        os.environ[_PREALLOCATE] = "false"
        os.environ[_MARK] = "1"


def _job_env(env: Mapping[str, str]) -> dict[str, str]:
    out = dict(env)
    if out.pop(_MARK, None):
        out.pop(_PREALLOCATE, None)
    return out


@dataclasses.dataclass(frozen=True)
class Job:
    """One subprocess: a name for progress lines, its argv, and the file its output goes to."""

    name: str
    argv: Sequence[str]
    log: Path


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run_jobs(
    jobs: Sequence[Job],
    slots: int,
    *,
    pin_gpus: bool,
    env: Mapping[str, str] | None = None,
    say: Callable[[str], None] = _say,
) -> list[float]:
    """Runs ``jobs`` as subprocesses, at most ``slots`` at a time; waits for all of them.

    Args:
      jobs: The jobs; each one's stdout and stderr go to its ``log`` (parents created).
      slots: Concurrent processes (>= 1); with ``pin_gpus``, the number of GPUs to use.
      pin_gpus: Give the process in slot ``i`` only GPU ``i`` (``CUDA_VISIBLE_DEVICES=i``).
      env: Environment for the jobs (default: this process's).
      say: Progress sink, one line per start and end.

    Returns:
      Each job's wall time in seconds, in the order of ``jobs``.

    Raises:
      JobError: after every started job has finished, naming the first job that failed, its
        exit status and the end of its log. The other jobs' results stay on disk.
    """
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    free: queue.Queue[int] = queue.Queue()
    for i in range(slots):
        free.put(i)
    base = _job_env(os.environ if env is None else env)

    def run(job: Job) -> tuple[int, float]:
        slot = free.get()
        try:
            job_env = dict(base)
            if pin_gpus:
                job_env["CUDA_VISIBLE_DEVICES"] = str(slot)
            job.log.parent.mkdir(parents=True, exist_ok=True)
            where = f"GPU {slot}" if pin_gpus else f"slot {slot}"
            say(f"[{where}] start {job.name} (log: {job.log})")
            t0 = time.perf_counter()
            with job.log.open("w") as log:
                code = subprocess.run(
                    list(job.argv), env=job_env, stdout=log, stderr=subprocess.STDOUT
                ).returncode
            wall = time.perf_counter() - t0
            say(
                f"[{where}] {'done' if code == 0 else f'FAILED ({code})'} {job.name} in {wall:.0f} s"
            )
            return code, wall
        finally:
            free.put(slot)

    with concurrent.futures.ThreadPoolExecutor(max_workers=slots) as pool:
        results = list(pool.map(run, jobs))
    for job, (code, _) in zip(jobs, results, strict=True):
        if code != 0:
            raise JobError(
                f"job {job.name} exited with status {code}; the end of {job.log}:\n{_tail(job.log)}"
            )
    return [wall for _, wall in results]
