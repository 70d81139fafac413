"""Argument checks shared by the exact tests of :mod:`jaxwm.stats`; private to that package.

Every check raises :class:`jaxwm.VerificationError` naming the argument and returns the value
converted to the plain type the tests compute with (``int``, ``float``, a NumPy array).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxwm.errors import VerificationError


def check_int(name: str, v: Any, minimum: int = 0) -> int:
    """A count: a (NumPy) integer, not a bool, at least ``minimum``.

    Args:
        name: The argument's name, for the message.
        v: The value.
        minimum: The smallest value allowed.

    Returns:
        ``v`` as a Python ``int``.
    """
    # bool is an int subclass; True as a count is almost certainly a bug upstream.
    if isinstance(v, bool) or not isinstance(v, int | np.integer):
        raise VerificationError(f"{name} must be an int; got {type(v).__name__} {v!r}")
    if v < minimum:
        raise VerificationError(f"{name} must be >= {minimum}; got {v}")
    return int(v)


def check_open_unit(name: str, v: Any) -> float:
    """A level or rate strictly between 0 and 1 (NaN is refused).

    Args:
        name: The argument's name, for the message.
        v: The value.

    Returns:
        ``v`` as a Python ``float``.
    """
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
        raise VerificationError(f"{name} must be a float in (0, 1); got {type(v).__name__} {v!r}")
    v = float(v)
    if not 0.0 < v < 1.0:  # also rejects NaN
        raise VerificationError(f"{name} must lie strictly between 0 and 1; got {v}")
    return v


def _label_array(name: str, x: Any) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise VerificationError(f"{name} must be a 1-D array; got shape {arr.shape}")
    if arr.size == 0:
        raise VerificationError(f"{name} must be non-empty")
    # bool arrays would pass an integer check via numpy's casting rules; labels are classes.
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise VerificationError(f"{name} must hold integer class labels; got dtype {arr.dtype}")
    return arr


def check_label_pair(predicted: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Predicted classes and trigger labels: non-empty 1-D integer arrays of equal length.

    Args:
        predicted: The suspect's predicted class per trigger.
        labels: The trigger labels.

    Returns:
        ``(predicted, labels)`` as NumPy arrays.
    """
    pred = _label_array("predicted", predicted)
    lab = _label_array("labels", labels)
    if pred.shape != lab.shape:
        raise VerificationError(
            f"predicted and labels must have equal length; got {pred.size} and {lab.size}"
        )
    return pred, lab


def check_unit_floats(name: str, x: Any) -> np.ndarray:
    """A non-empty 1-D sequence of finite numbers in [0, 1] (retentions, p-values).

    Args:
        name: The argument's name, for the message.
        x: The sequence.

    Returns:
        ``x`` as a ``float64`` array.
    """
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise VerificationError(f"{name} must be a 1-D sequence; got shape {arr.shape}")
    if arr.size == 0:
        raise VerificationError(f"{name} must be non-empty")
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise VerificationError(f"{name} must hold numbers in [0, 1]; got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0.0) or np.any(arr > 1.0):
        raise VerificationError(f"{name} must hold finite values in [0, 1]; got {arr.tolist()}")
    return arr
