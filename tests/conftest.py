"""Shared pytest configuration for the jaxwm test suite."""

import os

# The suite is sized for CPUs (tiny models); keep it there even on an accelerator machine.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def pytest_configure(config):
    # Registered here rather than in pyproject.toml; slow tests also skip unless
    # JAXWM_SLOW_TESTS=1 (see tests/test_data.py).
    config.addinivalue_line("markers", "slow: long-running test, set JAXWM_SLOW_TESTS=1 to run")
