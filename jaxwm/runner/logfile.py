"""``log.txt`` in every run directory: what was logged at INFO and above, and what was printed.

:func:`run_log` is installed by :func:`jaxwm.runner.modes.run` for the run's duration and removed
afterwards (also after an error, so an in-process caller keeps its logging as it was):

* a handler on the root logger writes jaxwm's records at INFO and above, and other libraries'
  at WARNING and above, to ``log.txt``, whatever the console shows (the console keeps its
  threshold: WARNING unless ``--verbosity``/``-v``);
* ``sys.stdout`` and ``sys.stderr`` are teed into the same file, so the lines the run prints
  (progress, tables, warnings) are there too, in order. A progress bar's ``\\r`` frames are
  reduced to the last frame of each line: the file holds plain lines.

Records a logging handler writes to the console reach the file once, through the handler, not
a second time through the tee. The owner's secret never reaches the file: any line holding it
is written with the secret replaced (nothing in jaxwm logs it; this is the second lock).

Example:
    >>> with run_log(Path("runs/demo"), redact=("my key",)):
    ...     print("training")  # on the console and in runs/demo/log.txt
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from jaxwm.errors import JaxwmError

LOG_NAME = "log.txt"
_REDACTED = "<secret>"
_local = threading.local()  # set while a logging handler writes: the tee then skips the file


class _Sink:
    """The open ``log.txt``: whole lines only, ``\\r`` frames dropped, secrets replaced."""

    def __init__(self, path: Path, redact: tuple[str, ...]) -> None:
        self._file = path.open("a", encoding="utf-8")
        self._redact = tuple(r for r in redact if r)
        self._partial: dict[int, str] = {}  # per tee: the text after its last newline
        self._lock = threading.Lock()

    def write(self, key: int, text: str) -> None:
        with self._lock:
            text = self._partial.pop(key, "") + text
            *lines, rest = text.split("\n")
            if rest:
                self._partial[key] = rest[-4096:]  # a bar redrawn forever stays bounded
            for line in lines:
                self._put(line.rsplit("\r", 1)[-1])  # what a terminal shows last

    def _put(self, line: str) -> None:
        if self._file.closed:
            return
        for secret in self._redact:
            line = line.replace(secret, _REDACTED)
        try:
            self._file.write(line.rstrip() + "\n")
            self._file.flush()  # a killed run keeps what it logged
        except OSError:  # a full disk: the run goes on (and reports it), without its log
            with contextlib.suppress(OSError):
                self._file.close()

    def close(self) -> None:
        with self._lock:
            for rest in self._partial.values():
                last = rest.rsplit("\r", 1)[-1]
                if last.strip():
                    self._put(last)
            self._partial.clear()
            with contextlib.suppress(OSError):
                self._file.close()


class _Tee(io.TextIOBase):
    """A text stream that writes to ``stream`` and, outside logging handlers, to the sink."""

    def __init__(self, stream, sink: _Sink) -> None:
        self._stream, self._sink = stream, sink

    def write(self, text: str) -> int:
        n = self._stream.write(text)
        if not getattr(_local, "in_handler", False):
            self._sink.write(id(self), text)
        return len(text) if n is None else n

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:  # progress bars decide on this: the real stream's answer
        return bool(getattr(self._stream, "isatty", lambda: False)())

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self):  # noqa: D102 -- the real stream's
        return getattr(self._stream, "encoding", "utf-8")

    def __getattr__(self, name):
        return getattr(self._stream, name)


class _FileHandler(logging.Handler):
    """First on the root logger: writes the record to the file, then marks the thread as being
    inside the handlers (until :class:`_Release`, last on the root logger), so that a console
    handler writing the same record to the teed stderr does not write it to the file again."""

    def __init__(self, sink: _Sink) -> None:
        super().__init__(logging.NOTSET)  # every record reaches handle(); emit filters by level
        self._sink = sink
        self.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )

    def handle(self, record: logging.LogRecord) -> bool:
        _local.in_handler = True
        # jaxwm's INFO records; other libraries' from WARNING (orbax alone logs ~40 INFO lines
        # per checkpoint, which would bury the run's own lines).
        floor = logging.INFO if record.name.startswith("jaxwm") else logging.WARNING
        if record.levelno < floor:
            return False
        return bool(super().handle(record))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._sink.write(id(self), self.format(record) + "\n")
        except Exception:  # a broken log line must not stop a run
            self.handleError(record)


class _Release(logging.Handler):
    def handle(self, record: logging.LogRecord) -> bool:
        _local.in_handler = False
        return False

    def emit(self, record: logging.LogRecord) -> None:  # never called
        pass


class _ConsoleThreshold(logging.Filter):
    """Keeps the console's handlers at the verbosity the user chose, while the root logger is
    lowered to INFO so that the file gets INFO records."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level


@contextlib.contextmanager
def run_log(workdir: Path, *, redact: tuple[str, ...] = ()) -> Iterator[Path]:
    """Writes ``workdir/log.txt`` (appended: a resumed run adds to it) while the block runs.

    Args:
      workdir: The run directory (it exists).
      redact: Strings never written to the file (the owner's secret).

    Returns:
      A context manager yielding the log file's path.

    Example:
      >>> with run_log(workdir, redact=(secret,)) as path:
      ...     modes_run(cfg, workdir)
    """
    path = Path(workdir) / LOG_NAME
    sink = _Sink(path, redact)
    root = logging.getLogger()
    console_level = root.getEffectiveLevel()
    consoles = list(root.handlers)
    threshold = _ConsoleThreshold(console_level)
    fallback = None
    if not consoles:  # what logging's last resort shows when no handler is installed
        fallback = logging.StreamHandler()  # sys.stderr at emit time: the tee
        fallback.setLevel(logging.WARNING)
    file_handler, release = _FileHandler(sink), _Release()
    saved = sys.stdout, sys.stderr
    # absl's handler passes records to its python_handler without applying its own filters.
    filtered = [*consoles, *(h.python_handler for h in consoles if hasattr(h, "python_handler"))]
    for h in filtered:
        h.addFilter(threshold)
    root.handlers.insert(0, file_handler)
    if fallback is not None:
        root.addHandler(fallback)
    root.addHandler(release)
    root.setLevel(min(console_level, logging.INFO))
    sys.stdout, sys.stderr = _Tee(saved[0], sink), _Tee(saved[1], sink)
    sink.write(0, f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}\n")
    try:
        yield path
    except BaseException as e:  # the CLI prints the error after this returns: keep it here too
        what = str(e) if isinstance(e, JaxwmError) else f"{type(e).__name__}: {e}"
        sink.write(0, f"error: {what}\n")
        raise
    finally:
        sys.stdout, sys.stderr = saved
        root.setLevel(console_level)
        for h in (file_handler, fallback, release):
            if h is not None:
                root.removeHandler(h)
        for h in filtered:
            h.removeFilter(threshold)
        _local.in_handler = False
        sink.close()
