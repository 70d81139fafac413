"""Worker processes for mode ``study`` (``study.workers`` > 1): units as calls, results back.

On a 2-core CPU one process keeps only ~1.6 cores busy (the host work between small XLA calls
leaves the other core idle), so two units in two processes finish sooner than one after the
other (~18% less wall on MNIST). Unlike :mod:`jaxwm.runner.procpool`, whose jobs are whole
command lines with a log each, a study unit is a Python call whose result (a small dict) the
parent needs: :func:`run_calls` sends each call down a pipe to a long-lived worker process and
hands its result to ``on_done`` in the parent as soon as it arrives, so the parent alone writes
the study's files. The workers live until every call is done, so the programs JAX compiled for
one unit serve the next.

Workers are started with the *spawn* method (JAX is not fork-safe: a forked child inherits the
parent's XLA threads in an undefined state). They ignore Ctrl-C: the parent handles it and
terminates them (a unit cut short is redone by a rerun). They start without the owner's
secret: ``$JAXWM_SECRET`` is removed from their environment and the parent's command line
(which may hold ``--config.watermark.secret``) from their ``sys.argv``; a call that needs a key
gets it as an argument, through the pipe.

Example:
    >>> calls = [Call(f"unit {i}", Path(f"units/{i}/log.txt"), work, (i,)) for i in range(4)]
    >>> run_calls(calls, 2, lambda call, result: print(call.label, result))
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections

from jaxwm.engine import checkpoint
from jaxwm.errors import JaxwmError, JobError
from jaxwm.runner import config, logfile

# JAX settings a worker copies from the parent before it compiles anything: the persistent
# compilation cache (JAX decides once per process whether it uses it).
_JAX_SETTINGS = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
)


@dataclasses.dataclass(frozen=True)
class Call:
    """One call to run in a worker.

    Attributes:
      label: What the call is, as an error names it (e.g. ``study unit mixed_2 seed 0 key 1``).
      log: Where the call's output goes, named in an error.
      fn: A module-level function (sent by reference: the worker imports its module).
      args: Its arguments (pickled through the pipe, never on a command line or in a file).
    """

    label: str
    log: Path
    fn: Callable[..., Any]
    args: tuple


def describe(e: BaseException) -> str:
    """An error in one line: a jaxwm error's message, otherwise its type and message."""
    return str(e) if isinstance(e, JaxwmError) else f"{type(e).__name__}: {e}"


def _serve(conn: multiprocessing.connection.Connection, settings: dict[str, Any]) -> None:
    """A worker's main loop: runs each call received until ``None`` (or the parent is gone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which ends us
    os.environ.pop(config.SECRET_ENV, None)
    sys.argv = sys.argv[:1]  # spawn copies the parent's argv; it may name the owner's secret
    for name, value in settings.items():
        jax.config.update(name, value)
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the parent died without saying goodbye
            return
        if msg is None:
            return
        fn, args = msg
        try:
            reply = ("ok", fn(*args))
        except Exception as e:  # reported by the parent, naming the call
            reply = ("error", describe(e))
        conn.send(reply)


def run_logged(run: Callable[..., dict[str, Any]], sub_dict: dict[str, Any], unit_dir: str,
               key: str, *args: Any) -> tuple[dict[str, Any], float]:  # fmt: skip
    """A study unit in a worker: ``run(sub, Path(unit_dir), *args)`` with ``key`` as the secret.

    The unit's output (Table 1, attack tables, warnings, an error and its traceback) goes to
    ``unit_dir/log.txt`` alone, with ``key`` replaced by ``<secret>``: the parent's console
    carries one progress line per unit, not the interleaved tables of several workers.

    Args:
      run: The unit (:func:`jaxwm.runner.study.run_unit`; passed in, as this module is below
        :mod:`jaxwm.runner.study`).
      sub_dict: The unit's pipeline config as a dict (victim set, ``watermark.secret`` empty).
      unit_dir: Its run directory.
      key: The unit's derived watermark key (through the pipe, never on a command line or on
        disk); ``$JAXWM_SECRET`` was removed when the worker started, so it is the one secret.
      *args: ``run``'s further arguments.

    Returns:
      ``(run's result, the unit's wall time in seconds)``.

    Raises:
      JaxwmError: the unit failed; the message (the key replaced) is the original error's.
    """
    sub = ml_collections.ConfigDict(sub_dict)
    sub.watermark.secret = key
    run_dir = Path(unit_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(os.devnull, "w") as null, contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stdout(null))  # run_log tees into the file
        stack.enter_context(contextlib.redirect_stderr(null))
        stack.enter_context(logfile.run_log(run_dir, redact=(key,)))
        print(f"study unit {run_dir} in worker process {os.getpid()}", file=sys.stderr)
        try:
            out = run(sub, run_dir, *args)
        except Exception as e:
            if not isinstance(e, JaxwmError):
                traceback.print_exc()  # to log.txt: a bug's traceback, not only its message
            raise JaxwmError(describe(e).replace(key, "<secret>")) from None
        finally:
            checkpoint.close_all()  # no save left in flight while the worker waits
    return out, time.perf_counter() - t0


class _Worker:
    """A worker process, the parent's end of its pipe, and the call it is running."""

    def __init__(self, ctx: Any, settings: dict[str, Any]) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, settings), daemon=True)
        self.proc.start()
        child.close()  # ours closed: recv() sees EOF when the worker dies
        self.call: Call | None = None

    def give(self, call: Call) -> None:
        self.call = call
        self.conn.send((call.fn, call.args))

    def reply(self) -> tuple[str, Any]:
        """The finished call's ``(status, value)``; ``("died", exit code)`` for a dead worker."""
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            self.proc.join(timeout=5)
            return "died", self.proc.exitcode

    def close(self) -> None:
        if self.proc.is_alive() and self.call is None:
            with contextlib.suppress(OSError):
                self.conn.send(None)
            self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=10)
        self.conn.close()


def run_calls(calls: Sequence[Call], workers: int,
              on_done: Callable[[Call, Any], None]) -> None:  # fmt: skip
    """Runs ``calls`` in ``workers`` spawned processes; ``on_done`` gets each result at once.

    Calls are handed out in the order given (a free worker takes the next one); results arrive
    in the order they finish.

    Args:
      calls: The calls.
      workers: Worker processes (>= 1; no more are started than there are calls).
      on_done: Called in this process with ``(call, result)`` as each call finishes.

    Raises:
      JobError: after a call raised (or its worker died): no further call is started, the
        running ones finish (``on_done`` gets theirs), then the error names the first failed
        call, its error and its log.
      KeyboardInterrupt: the workers are terminated (their calls are lost) and no further
        call runs; the results already handed to ``on_done`` stay.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    todo = collections.deque(calls)
    if not todo:
        return
    ctx = multiprocessing.get_context("spawn")  # JAX is not fork-safe
    settings = {name: getattr(jax.config, name) for name in _JAX_SETTINGS}
    pool: list[_Worker] = []
    failed: tuple[Call, str] | None = None
    try:
        for _ in range(min(workers, len(todo))):
            pool.append(_Worker(ctx, settings))
            pool[-1].give(todo.popleft())
        while busy := [w for w in pool if w.call is not None]:
            # A result on a pipe, or a worker that died (its sentinel) before sending one.
            ready = multiprocessing.connection.wait(
                [w.conn for w in busy] + [w.proc.sentinel for w in busy]
            )
            for w in busy:
                if w.conn not in ready and w.proc.sentinel not in ready:
                    continue
                status, value = w.reply()
                call, w.call = w.call, None
                if status == "ok":
                    on_done(call, value)
                elif failed is None:
                    why = value if status == "error" else (
                        f"its worker process died (exit status {value}; -9 is a kill, e.g. for "
                        "lack of memory)")  # fmt: skip
                    failed = (call, why)
                if failed is None and todo and status != "died":
                    w.give(todo.popleft())
    except BaseException:  # Ctrl-C, or on_done failed: nothing waits for the workers' results
        for w in pool:
            w.proc.terminate()
        raise
    finally:
        for w in pool:
            w.close()
    if failed is not None:
        call, why = failed
        raise JobError(f"{call.label} failed in a worker process: {why} (its output: {call.log})")
