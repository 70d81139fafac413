"""Compilation accounting and JAX's persistent compilation cache.

Compile time is a large share of a short GPU run (ResNet18 on CIFAR-10: about 20 s of a 59 s
run on an H200), so every run reports how many XLA compilations it did, how long they took and
what the persistent cache saved. The counts come from ``jax.monitoring`` events, so they cover
every jitted function, the library's and the user's.

Example:
  >>> enable_persistent_cache("~/.cache/jaxwm/xla")
  >>> with CompileStats() as stats:
  ...     train_step(ts, x, y)
  >>> print(stats)  # "3 XLA compilations (4.1 s); persistent cache: 2 hits, 1 new entry"
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from pathlib import Path

import jax

_COMPILE = "/jax/core/compile/backend_compile_duration"
_TRACE = "/jax/core/compile/jaxpr_trace_duration"
_HIT = "/jax/compilation_cache/cache_hits"
_WRITE = "/jax/compilation_cache/cache_misses"  # recorded when an entry is written


def enable_persistent_cache(directory: str | Path, min_compile_s: float = 1.0) -> Path:
    """Turns on JAX's persistent compilation cache in ``directory`` (created if needed).

    Args:
      directory: Cache directory; ``~`` is expanded. Safe to share between runs and processes.
      min_compile_s: Only compilations that took at least this long are written: small helper
        functions compile faster than they load. 0 caches everything.

    Returns:
      The expanded directory.
    """
    if min_compile_s < 0:
        raise ValueError(f"min_compile_s must be >= 0, got {min_compile_s}")
    path = Path(directory).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_s))
    if min_compile_s == 0:
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return path


@dataclasses.dataclass
class CompileStats:
    """Counts XLA compilations and persistent-cache traffic while active (a context manager).

    Attributes:
      compilations: Backend compilations requested, including those served from the cache.
      compile_s: Seconds spent in them (a cache hit costs only its load time).
      trace_s: Seconds spent tracing Python functions to jaxprs.
      cache_hits: Executables loaded from the persistent cache.
      cache_writes: New entries written to the persistent cache.
      by_function: Compilations per jitted function name (e.g. ``"jit(evaluate)"``).
      seconds_by_function: Compile seconds per jitted function name.
    """

    compilations: int = 0
    compile_s: float = 0.0
    trace_s: float = 0.0
    cache_hits: int = 0
    cache_writes: int = 0
    by_function: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    seconds_by_function: collections.Counter = dataclasses.field(
        default_factory=collections.Counter
    )

    def __post_init__(self) -> None:
        self._lock = threading.Lock()  # compilations may run on several threads

    def _on_event(self, event: str, **_: object) -> None:
        with self._lock:
            if event == _HIT:
                self.cache_hits += 1
            elif event == _WRITE:
                self.cache_writes += 1

    def _on_duration(self, event: str, duration: float, **kw: object) -> None:
        with self._lock:
            if event == _COMPILE:
                self.compilations += 1
                self.compile_s += duration
                name = str(kw.get("fun_name", "?"))
                self.by_function[name] += 1
                self.seconds_by_function[name] += duration
            elif event == _TRACE:
                self.trace_s += duration

    def __enter__(self) -> CompileStats:
        jax.monitoring.register_event_listener(self._on_event)
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        return self

    def __exit__(self, *exc: object) -> None:
        jax.monitoring.unregister_event_listener(self._on_event)
        jax.monitoring.unregister_event_duration_listener(self._on_duration)

    def as_dict(self, top: int = 10) -> dict[str, object]:
        """The counts as a JSON-ready dict, with the ``top`` most expensive functions."""
        slowest = sorted(self.seconds_by_function.items(), key=lambda kv: -kv[1])[:top]
        return {
            "compilations": self.compilations,
            "compile_s": round(self.compile_s, 3),
            "trace_s": round(self.trace_s, 3),
            "cache_hits": self.cache_hits,
            "cache_writes": self.cache_writes,
            "slowest": [
                {"function": f, "n": self.by_function[f], "s": round(t, 3)} for f, t in slowest
            ],
        }

    def __str__(self) -> str:
        entries = "entry" if self.cache_writes == 1 else "entries"
        return (
            f"{self.compilations} XLA compilations ({self.compile_s:.1f} s); persistent cache: "
            f"{self.cache_hits} hits, {self.cache_writes} new {entries}"
        )
