"""One writer per run directory: an advisory lock held for the whole run.

Two runs started on one ``--workdir`` used to interleave their checkpoints, ``config.json`` and
``metrics.jsonl`` (or die in orbax, or hang). :func:`workdir_lock` takes an exclusive ``flock`` on
``<workdir>/.jaxwm.lock`` before anything is written; a second run fails at once with one line
naming the holder. The operating system releases the lock when the holding process exits, also
after ``kill -9``, so a crashed run never blocks its resume. On systems without ``fcntl``
(Windows) no lock is taken.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from jaxwm.errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".jaxwm.lock"


@contextlib.contextmanager
def workdir_lock(workdir: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the run directory's lock for the duration of the ``with`` block.

    Args:
        workdir: The run directory (created if missing).

    Yields:
        The lock file's path.

    Raises:
        ConfigError: Another process holds the lock; the message names it.

    Example:
        >>> with workdir_lock("runs/demo"):  # doctest: +SKIP
        ...     pass
    """
    path = Path(workdir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield path
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown process"
            raise ConfigError(
                f"--workdir {str(Path(workdir))!r} is in use by another jaxwm run ({holder}); wait "
                "for it to finish, or pick another --workdir"
            ) from None
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {now}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock
