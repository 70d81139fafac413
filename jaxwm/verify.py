"""Ownership verification: does a suspect model reproduce the owner's trigger labels?

Two tests, both from the owner's side (no access to the suspect's weights):

* A one-sided exact binomial test against chance ``1/K``. With labels drawn uniformly from the
  owner's key (``label_policy="random"``) this null is exact for *any* innocent model: whatever
  it predicts, each secret label matches with probability ``1/K``, independently.
* Optionally, an empirical threshold fitted on the retentions of independently trained,
  non-watermarked models (Watermark-Robustness-Toolbox, Lukas et al. 2022). This guards the cases
  where the binomial null is not exact, e.g. ``target`` labels or trigger images that innocent
  models map to a common class.

Model evaluation stays with the caller, except :func:`predict_labels`, which batches a predict
function over the trigger images.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxwm.binomial import VerificationError as VerificationError
from jaxwm.binomial import binomial_log_pvalue as binomial_log_pvalue
from jaxwm.binomial import binomial_pvalue as binomial_pvalue

DEFAULT_ALPHA = 1e-3
DEFAULT_NULL_MARGIN = 0.05


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
    pred, lab = _check_pair(predicted, labels)
    return float(np.mean(pred == lab))


def _check_pair(predicted: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
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


def null_threshold(
    null_retentions: Sequence[float], fpr: float, *, margin: float = DEFAULT_NULL_MARGIN
) -> float:
    """Decision threshold from the retentions of independently trained non-watermarked models.

    Ownership requires ``retention > threshold``. With ``m`` null models, at most
    ``j = floor(fpr * m)`` of them may lie above the threshold, so the smallest such threshold is
    the ``(j+1)``-th largest null retention (equivalently, the infimum of thresholds whose
    empirical fraction of null models at or above it is ``<= fpr``). Conservative rule: when
    ``j == 0`` (fewer than ``1/fpr`` null models) the sample cannot resolve the ``fpr`` quantile,
    and even "above the maximum" has a false-positive rate of up to ``1/(m+1)``; the threshold is
    then ``max(null) + margin``.

    Args:
        null_retentions: Retentions in ``[0, 1]`` of null models on the trigger set.
        fpr: Allowed false-positive rate, in ``(0, 1)`` (WRT uses 0.05).
        margin: Added to the maximum when there are too few null models.

    Returns:
        The threshold.

    Example:
        >>> null_threshold([0.1] * 18 + [0.2, 0.3], 0.05)  # 20 models: 1 may exceed
        0.2
    """
    vals = np.asarray(null_retentions, dtype=np.float64).ravel()
    if vals.size == 0:
        raise VerificationError(
            "null_retentions is empty; evaluate at least one non-watermarked model"
        )
    if not np.all(np.isfinite(vals)) or vals.min() < 0.0 or vals.max() > 1.0:
        raise VerificationError("null_retentions must be finite fractions in [0, 1]")
    if not 0.0 < fpr < 1.0:
        raise VerificationError(f"fpr must lie in (0, 1); got {fpr}")
    if not margin >= 0.0:
        raise VerificationError(f"margin must be >= 0; got {margin}")
    m = vals.size
    j = math.floor(fpr * m + 1e-9)  # 1e-9: 0.05 * 20 must count as 1, whatever the rounding
    desc = np.sort(vals)[::-1]
    if j == 0:
        return float(desc[0] + margin)
    return float(desc[min(j, m - 1)])


@dataclasses.dataclass
class Verdict:
    """Outcome of an ownership check.

    Attributes:
        retention: Fraction of triggers whose label the suspect reproduced.
        n: Number of triggers.
        k: Number reproduced.
        num_classes: Classes ``K`` of the task.
        chance: ``1/K``, an innocent model's expected retention.
        p_value: One-sided binomial p-value of ``k`` under chance (may underflow to 0.0).
        log10_p_value: ``log10(p_value)``, finite even where ``p_value`` underflows.
        alpha: Significance level used.
        threshold: Null-model threshold, or ``None`` if no null models were given.
        owned: Whether ownership is established.
        confidence: ``1 - p_value``.
        reason: One human-readable line explaining the decision.
    """

    retention: float
    n: int
    k: int
    num_classes: int
    chance: float
    p_value: float
    log10_p_value: float
    alpha: float
    threshold: float | None
    owned: bool
    confidence: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of all fields.

        Example:
            >>> verify_predictions(np.array([1, 1]), np.array([1, 1]), 2).to_dict()["k"]
            2
        """
        return dataclasses.asdict(self)


def verify_predictions(
    predicted: Any,
    labels: Any,
    num_classes: int,
    *,
    alpha: float = DEFAULT_ALPHA,
    null_retentions: Sequence[float] | None = None,
    fpr: float = 0.05,
    null_margin: float = DEFAULT_NULL_MARGIN,
) -> Verdict:
    """Decide ownership from a suspect model's predictions on the trigger set.

    Owned iff ``p_value < alpha`` and, when null retentions are given, ``retention > threshold``
    (:func:`null_threshold`). The default ``alpha = 1e-3`` is stricter than the usual 0.05/0.01
    because a false accusation is the costly error and an owner may test several suspects or sets;
    it costs little power: with 100 triggers and K = 10, 21 matches (21 %, vs chance 10 %) suffice,
    far below the ~85 % retention of a watermarked model.

    Args:
        predicted: Suspect's integer predictions ``(N,)`` on the trigger images.
        labels: Owner's trigger labels ``(N,)`` in ``[0, num_classes)``.
        num_classes: ``K >= 2``.
        alpha: Significance level in ``(0, 1)``.
        null_retentions: Retentions of independent non-watermarked models, or ``None``.
        fpr: False-positive rate for the null threshold.
        null_margin: Margin of the conservative rule of :func:`null_threshold`.

    Returns:
        The :class:`Verdict`.

    Example:
        >>> v = verify_predictions(np.arange(100) % 10, np.arange(100) % 10, 10)
        >>> v.owned, v.retention
        (True, 1.0)
    """
    pred, lab = _check_pair(predicted, labels)
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, int | np.integer)
        or num_classes < 2
    ):
        raise VerificationError(f"num_classes must be an int >= 2; got {num_classes!r}")
    if lab.min() < 0 or lab.max() >= num_classes:
        raise VerificationError(f"labels must lie in [0, {num_classes}) (num_classes)")
    if not 0.0 < alpha < 1.0:
        raise VerificationError(f"alpha must lie in (0, 1); got {alpha}")
    n, k = int(lab.size), int(np.sum(pred == lab))
    chance = 1.0 / num_classes
    log_p = binomial_log_pvalue(k, n, chance)
    p_value = math.exp(log_p)
    ret = k / n
    nulls = None if null_retentions is None else list(null_retentions)
    threshold = None if nulls is None else null_threshold(nulls, fpr, margin=null_margin)
    significant = p_value < alpha
    above_null = threshold is None or ret > threshold
    owned = significant and above_null
    summary = (
        f"{k}/{n} trigger labels reproduced ({ret:.1%} vs chance {chance:.1%}), p={p_value:.3g}"
    )
    if not significant:
        reason = f"not owned: {summary} >= alpha={alpha:g}; consistent with chance"
    elif not above_null:
        reason = (
            f"not owned: {summary} < alpha={alpha:g}, but retention does not exceed the threshold "
            f"{threshold:.1%} fitted on {len(nulls)} independent models (fpr={fpr:g})"
        )
    else:
        null_note = (
            "" if threshold is None else f" and retention above null threshold {threshold:.1%}"
        )
        reason = f"owned: {summary} < alpha={alpha:g}{null_note}"
    return Verdict(
        retention=ret,
        n=n,
        k=k,
        num_classes=int(num_classes),
        chance=chance,
        p_value=p_value,
        log10_p_value=log_p / math.log(10.0),
        alpha=float(alpha),
        threshold=threshold,
        owned=owned,
        confidence=1.0 - p_value,
        reason=reason,
    )


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
