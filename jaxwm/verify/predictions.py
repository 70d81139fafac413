"""The suspect's answers as class labels: batched prediction, argument checks, retention.

Model evaluation stays with the caller, except :func:`predict_labels`, which batches a predict
function over the trigger images. :func:`check_predictions` is the check every verdict applies
to a pair of label arrays; :func:`retention` is the fraction of trigger labels reproduced;
:func:`predict_controls` predicts the control sets, no further than the verdict needs
(:func:`rank_log10_pvalue` is the rank test both use).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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


def rank_log10_pvalue(at_least: int, sets: int) -> float:
    """log10 of a rank test's p-value, ``(1 + at_least) / (sets + 1)``: the owner's set ranked
    among ``sets`` control sets, ``at_least`` of which matched at least as often.

    The one formula the verdict, :func:`predict_controls`'s stop and its guard all use, so they
    cannot disagree on when the test rejects (``rank_log10_pvalue(...) < log10(alpha)``).

    Example:
        >>> round(10 ** rank_log10_pvalue(0, 999), 6)
        0.001
    """
    return math.log10((1 + at_least) / (sets + 1))


def predict_controls(
    labels_fn: Callable[[np.ndarray], Any],
    set_images: Sequence[Any],
    set_labels: Sequence[Any],
    owner_matches: int,
    *,
    alpha: float,
    clustered: bool,
    sets_per_call: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """The suspect's labels on the control sets, stopping once a rank test cannot reject.

    A clustered kind's control test ranks the owner's set among ``B`` whole control sets and
    rejects only if ``(1 + a) / (B + 1) < alpha``, ``a`` being the sets matched at least as often
    as the owner's (``owner_matches``). ``a`` only grows as sets are added, so once the sets seen
    so far make that impossible the verdict is "not owned" whatever the rest would show: the
    remaining sets are not predicted (a non-watermarked suspect usually shows this within the
    first call: 1,000 sets at alpha 1e-3 cost one call instead of 100). The rank test on the sets
    returned has ``p >= (1 + a) / (B' + 1) >= alpha``, so the verdict is the one all ``B`` sets
    give; a suspect that may still be owned is always tested on all of them. Pooled (Fisher)
    controls are always predicted whole.

    Args:
        labels_fn: ``images -> predicted labels`` (e.g. :func:`predict_labels` over a model).
        set_images: The control sets' images, one array ``(N, H, W, C)`` per set.
        set_labels: Their labels, one array ``(N,)`` per set.
        owner_matches: How many of the owner's ``N`` triggers the suspect matched.
        alpha: The control test's significance level, in ``(0, 1)``.
        clustered: Whether the controls are ranked as whole sets
            (``jaxwm.controls.clustered(kind)``); only then does prediction stop early.
        sets_per_call: Control sets predicted per call of ``labels_fn``, >= 1.

    Returns:
        ``(predicted, labels)``: the labels of the sets predicted (a prefix of the sets, whole
        sets only) and their control labels, concatenated, for ``control_predicted`` and
        ``control_labels`` of :func:`jaxwm.verify.verify_predictions`.

    Example:
        >>> sets = [np.full((2, 1, 1, 1), i) for i in range(1000)]
        >>> labs = [np.zeros(2, np.int32)] * 1000
        >>> pred, _ = predict_controls(lambda x: np.zeros(len(x), np.int32), sets, labs, 2,
        ...                            alpha=1e-3, clustered=True)
        >>> len(pred)  # the first 10 sets already match as often as the owner's: not owned
        20
    """
    if len(set_images) != len(set_labels) or not set_images:
        raise VerificationError(
            f"predict_controls needs as many label arrays as image sets, at least one; got "
            f"{len(set_images)} and {len(set_labels)}"
        )
    if isinstance(sets_per_call, bool) or not isinstance(sets_per_call, int) or sets_per_call < 1:
        raise VerificationError(f"sets_per_call must be an int >= 1; got {sets_per_call!r}")
    if not 0.0 < alpha < 1.0:
        raise VerificationError(f"alpha must lie in (0, 1); got {alpha}")
    sizes = {len(x) for x in set_labels}
    if len(sizes) != 1:
        raise VerificationError(f"control sets must all have one size; got sizes {sorted(sizes)}")
    size = sizes.pop()
    if (
        isinstance(owner_matches, bool)
        or not isinstance(owner_matches, int | np.integer)
        or not 0 <= owner_matches <= size
    ):
        raise VerificationError(
            f"owner_matches must be the count (an int in [0, {size}]) of the owner's triggers "
            f"the suspect matched; got {owner_matches!r}"
        )
    total = len(set_images)
    step = sets_per_call if clustered else total
    preds, labs, at_least = [], [], 0
    for start in range(0, total, step):
        chunk = range(start, min(start + step, total))
        lab = [np.asarray(set_labels[i]) for i in chunk]
        pred = np.asarray(labels_fn(np.concatenate([np.asarray(set_images[i]) for i in chunk])))
        if pred.shape != (sum(len(x) for x in lab),):
            raise VerificationError(
                f"labels_fn returned shape {pred.shape} for {sum(len(x) for x in lab)} control "
                "images; it must return one label per image"
            )
        preds.append(pred)
        labs.extend(lab)
        if not clustered:
            continue
        bounds = np.cumsum([0] + [len(x) for x in lab])
        at_least += sum(
            int(np.sum(pred[lo:hi] == x) >= owner_matches)
            for lo, hi, x in zip(bounds[:-1], bounds[1:], lab, strict=True)
        )
        # The same comparison the verdict makes (log10 p < log10 alpha), on all `total` sets.
        if not rank_log10_pvalue(at_least, total) < math.log10(alpha):
            break
    return np.concatenate(preds).astype(np.int32), np.concatenate(labs)
