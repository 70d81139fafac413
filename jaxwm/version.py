"""jaxwm's version, and the source revision a result was computed with.

Every run records both (``results.json``: ``environment``), so a figure can be traced to the code
that produced it.

Example:
    >>> __version__
    '0.2.0'
"""

from __future__ import annotations

import subprocess
from pathlib import Path

__version__ = "0.2.0"


def git_revision() -> str | None:
    """The git commit of jaxwm's source tree, with ``+dirty`` if it has uncommitted changes.

    Returns:
        ``"<40 hex>"`` or ``"<40 hex>+dirty"``; ``None`` when jaxwm is not run from a git
        checkout (an installed wheel) or git is unavailable.

    Example:
        >>> git_revision()  # doctest: +SKIP
        '9bdb34a...'
    """
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty.strip() else "") if rev else None
