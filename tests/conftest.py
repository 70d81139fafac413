"""Shared pytest configuration for the jaxwm test suite."""

import contextlib
import os

# The suite is sized for CPUs (tiny models); keep it there even on an accelerator machine.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from jaxwm.engine import compile_stats  # noqa: E402  (after JAX_PLATFORMS is set)
from jaxwm.runner import config  # noqa: E402

# Most of the suite's time is XLA compilation of the same tiny programs that every launch.py
# subprocess already loads from the default persistent cache (config.compile_cache). Turn
# the same cache on here, before this process compiles anything (JAX decides once per process
# whether it uses the cache), so in-process runs and fits reuse those programs too. Cached
# executables are the same programs, and CompileStats counts a cache hit as a compilation.
_DEFAULTS = config.defaults()
if _DEFAULTS.compile_cache:
    # An unwritable home directory only makes the suite slower.
    with contextlib.suppress(OSError):
        compile_stats.enable_persistent_cache(
            _DEFAULTS.compile_cache, _DEFAULTS.compile_cache_min_s
        )


def pytest_configure(config):
    # Registered here rather than in pyproject.toml; slow tests also skip unless
    # JAXWM_SLOW_TESTS=1 (see tests/test_data.py).
    config.addinivalue_line("markers", "slow: long-running test, set JAXWM_SLOW_TESTS=1 to run")
