"""The one cache of jitted programs: ``(builder, static arguments) -> jitted function``.

``jax.jit`` keeps its compilation cache on the *function object* it wraps. A builder such as
"the training epoch for this model, optimizer shape and mask" makes a new closure at every call,
so without a cache every call would trace and compile again. Every builder of a jitted program in
the library is therefore decorated with :func:`cached`, and this module holds the only cache.

The key is stated and uniform: ``(builder, *args, *sorted(kwargs.items()))`` where ``builder`` is
the decorated function itself (its identity) and the arguments are the *static* configuration:
the model's ``apply``/``init`` function objects (the same architecture is the same objects, see
:func:`jaxwm.models.resnet`), frozen hyper-parameter dataclasses with run-only numbers normalised
away, mask keys (:func:`jaxwm.engine.partition.mask_key`), step counts, normalisation tuples and
shardings. Array values (data, parameters, learning rates held in the optimizer state) are never
part of a key: they are arguments of the jitted function, so one entry serves every value of the
same shape, and jit itself retraces for new shapes.

The cache is a least-recently-used dict of at most :data:`MAX_ENTRIES` programs, shared by all
builders, so a long study cannot grow it without bound.

Example:
  >>> @cached
  ... def scaled(factor: float):
  ...     return jax.jit(lambda x: x * factor)
  >>> scaled(2.0) is scaled(2.0)
  True
"""

from __future__ import annotations

import collections
import functools
import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

MAX_ENTRIES = 128

F = TypeVar("F", bound=Callable[..., Any])

_entries: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
_lock = threading.Lock()


def cached(builder: F) -> F:
    """Decorates a builder of jitted programs so each ``(builder, static args)`` builds once.

    Args:
      builder: A function of hashable, static arguments returning a jitted callable.

    Returns:
      The builder, memoised in the module's cache under
      ``(builder, *args, *sorted(kwargs.items()))``.
    """

    @functools.wraps(builder)
    def get(*args: Hashable, **kwargs: Hashable) -> Any:
        key = (builder, *args, *sorted(kwargs.items()))
        with _lock:
            if key in _entries:
                _entries.move_to_end(key)
                return _entries[key]
        value = builder(*args, **kwargs)
        with _lock:
            value = _entries.setdefault(key, value)  # another thread may have built it first
            _entries.move_to_end(key)
            while len(_entries) > MAX_ENTRIES:
                _entries.popitem(last=False)
        return value

    return get  # type: ignore[return-value]


def size() -> int:
    """Number of programs currently cached (all builders)."""
    return len(_entries)


def clear() -> None:
    """Drops every cached program (the next call of each builder traces and compiles again)."""
    with _lock:
        _entries.clear()
