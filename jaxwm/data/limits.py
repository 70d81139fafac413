"""Resource limits of ``folder:`` sources, each overridable by an environment variable.

A folder or archive comes from outside, so what it may cost is bounded before it is paid. Each
error names the file, the limit and the environment variable that raises it:
``JAXWM_MAX_FILE_BYTES`` (one file or tar member, checked on its declared size before it is
read; default 64 MiB), ``JAXWM_MAX_IMAGE_PIXELS`` (one image, checked from its header before it is
decoded; default 4096*4096) and ``JAXWM_MAX_DECODED_BYTES`` (all decoded images together; default
8 GiB; peak memory is about twice this while the per-split arrays are stacked). Pillow's own
decompression-bomb check (2 * ``PIL.Image.MAX_IMAGE_PIXELS``, ~179M px) still applies above it.

The defaults are read at each check (``limits.MAX_FILE_BYTES``, ...), so tests can lower them.
"""

from __future__ import annotations

import os

from jaxwm.errors import DatasetError

# Defaults; each check lets the environment variable it names override its default.
MAX_FILE_BYTES = 64 * 2**20  # one file / tar member, on its declared size, before reading it
MAX_IMAGE_PIXELS = 4096 * 4096  # one image, from its header, before decoding it
MAX_DECODED_BYTES = 8 * 2**30  # all decoded images of a dataset together


def env_limit(env: str, default: int) -> int:
    """The limit from ``$env`` (a positive integer) or ``default``.

    Args:
        env: The environment variable's name.
        default: The limit when the variable is unset or blank.

    Returns:
        The limit.
    """
    raw = os.environ.get(env)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise DatasetError(f"${env}={raw!r}: must be a positive integer (a byte or pixel count)")
    return value


def too_big(where: str, what: str, value: int, limit: int, env: str) -> DatasetError:
    """The error for ``value`` over ``limit``, naming ``where`` and the variable ``env`` to raise.

    Args:
        where: The file or archive member at fault.
        what: What was measured, e.g. "the file's size in bytes".
        value: The measured value.
        limit: The limit it exceeds.
        env: The environment variable that raises the limit.

    Returns:
        The :class:`DatasetError` to raise.
    """
    return DatasetError(
        f"{where}: {what} is {value:,}, over the limit of {limit:,}; if the file is genuine, "
        f"raise it with {env}=<larger number>"
    )


def check_file_size(where: str, size: int) -> None:
    """Refuse a file or tar member over ``$JAXWM_MAX_FILE_BYTES``, before it is read.

    Args:
        where: The file or archive member, for the error message.
        size: Its (declared) size in bytes.
    """
    limit = env_limit("JAXWM_MAX_FILE_BYTES", MAX_FILE_BYTES)
    if size > limit:
        raise too_big(where, "the file's size in bytes", size, limit, "JAXWM_MAX_FILE_BYTES")
