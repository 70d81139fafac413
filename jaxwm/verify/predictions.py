"""The suspect's answers as class labels: batched prediction, argument checks, retention.

Model evaluation stays with the caller, except :func:`predict_labels`, which batches a predict
function over the trigger images. :func:`check_predictions` is the check every verdict applies
to a pair of label arrays; :func:`retention` is the fraction of trigger labels reproduced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from jaxwm.errors import VerificationError


def retention(predicted: Any, labels: Any) -> float:
    """Fraction of trigger inputs on which the suspect predicts the owner's label.

    Args:
        predicted: Integer labels ``(N,)`` predicted by the suspect model.
        labels: The owner's trigger labels ``(N,)``.

    Returns:
        ``mean(predicted == labels)`` in ``[0, 1]``.

    Example:
        >>> retention(np.array([1, 2, 3, 0]), np.array([1, 2, 0, 0]))
        0.75
    """
    pred, lab = check_predictions(predicted, labels)
    return float(np.mean(pred == lab))


def check_predictions(predicted: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Check a suspect's predicted classes against trigger labels: equal 1-D integer arrays.

    Args:
        predicted: Integer labels ``(N,)`` predicted by the suspect model.
        labels: The owner's (or the controls') labels ``(N,)``, ``N >= 1``.

    Returns:
        ``(predicted, labels)`` as NumPy arrays.

    Example:
        >>> check_predictions([1, 0], [1, 1])[0]
        array([1, 0])
    """
    pred, lab = np.asarray(predicted), np.asarray(labels)
    for name, arr in (("predicted", pred), ("labels", lab)):
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise VerificationError(
                f"{name} must be a 1-D integer array of class ids; got {arr.dtype} {arr.shape} "
                "(for logits pass argmax(logits, -1) or use predict_labels)"
            )
    if pred.shape != lab.shape:
        raise VerificationError(
            f"predicted has shape {pred.shape} but labels has {lab.shape}; they must match"
        )
    if lab.size == 0:
        raise VerificationError("labels is empty; verification needs at least one trigger")
    return pred, lab


def predict_labels(
    predict_fn: Callable[[Any], Any], images: Any, batch_size: int = 256
) -> np.ndarray:
    """Map ``predict_fn`` (images batch -> logits) over ``images`` and return argmax labels.

    Every call gets exactly ``batch_size`` images: the last batch is padded with zeros and the
    padded rows dropped, so a jitted ``predict_fn`` compiles once. Images are passed unchanged
    (normalisation is ``predict_fn``'s job).

    Args:
        predict_fn: Callable from ``(batch_size, H, W, C)`` to logits ``(batch_size, K)``.
        images: Array ``(N, H, W, C)``.
        batch_size: Fixed batch size, >= 1.

    Returns:
        ``int32`` labels ``(N,)``.

    Example:
        >>> predict_labels(lambda x: x.reshape(len(x), -1)[:, :3], np.eye(3)[:, None, None, :], 2)
        array([0, 1, 2], dtype=int32)
    """
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or batch_size < 1
    ):
        raise VerificationError(f"batch_size must be an int >= 1; got {batch_size!r}")
    x = np.asarray(images)
    if x.ndim < 1:
        raise VerificationError("images must be an array with a leading batch axis")
    n = len(x)
    outputs = []
    for start in range(0, n, batch_size):
        batch = x[start : start + batch_size]
        valid = len(batch)
        if valid < batch_size:
            pad = np.zeros((batch_size - valid, *x.shape[1:]), dtype=x.dtype)
            batch = np.concatenate([batch, pad])
        # Keep the raw outputs: JAX dispatch is asynchronous, so the device keeps working on the
        # next batch while earlier results are still being computed.
        outputs.append((predict_fn(batch), valid))
    labels = []
    for logits, valid in outputs:
        arr = np.asarray(logits)
        if arr.ndim != 2 or arr.shape[0] != batch_size:
            raise VerificationError(
                f"predict_fn must return logits (batch_size={batch_size}, K); got shape {arr.shape}"
            )
        labels.append(np.argmax(arr[:valid], axis=-1))
    return np.concatenate(labels).astype(np.int32) if labels else np.zeros((0,), np.int32)
