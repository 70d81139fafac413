"""Keyed trigger (watermark) sets and their public commitments.

A trigger set is the owner's secret evidence: inputs paired with owner-chosen labels that a
watermarked model reproduces and an independent model does not (Lyu & Xian 2026, after Adi et
al. 2018 and Zhang et al. 2018). Every set is a deterministic function of the owner's secret, so
the owner only has to keep the key: :func:`jaxwm.manifest.write_manifest` publishes the parameters and a SHA-256
commitment (never the key), and :func:`jaxwm.manifest.regenerate` rebuilds the set from the key and checks it
against that commitment before it is used as evidence.

Reproducibility across machines is deliberate: random numbers come from PCG64's raw output
(stream-stable, unlike ``numpy.random.Generator`` methods, see NEP 19) and the pixel maths uses
only correctly rounded operations (+, -, *, /, sqrt, floor, min/max), never SIMD-dependent
transcendental functions. Should anything still drift, the commitment check fails loudly. The
keyed random streams and the pixel synthesis live in :mod:`jaxwm.trigger_images`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxwm.errors import TriggerSetError
from jaxwm.trigger_images import (
    DOMAIN,
    KeyedStream,
    abstract_image,
    as_labels,
    as_nhwc,
    check_image_shape,
    check_int,
    content_stamp,
    framed,
    resize_convert,
)

TRIGGER_KINDS = ("noise", "content", "unrelated", "folder")
LABEL_POLICIES = ("random", "target")
# The parameters a commitment binds (format 2): everything that changes the statistical test.
# A claimant who edits any of them in a manifest (say num_classes, which moves the chance level
# of a target-label set) gets a set whose commitment no longer matches.
COMMITTED_PARAMS = ("kind", "size", "image_shape", "num_classes", "label_policy", "target_class",
                    "index", "source_digest")  # fmt: skip
COMMITMENT_VERSIONS = (1, 2)
# The public key of the demo configs: anybody can regenerate its sets, so it proves nothing.
DEMO_SECRET = "jaxwm-demo-secret-do-not-use"
MIN_SECRET_BITS = 128

PathLike = str | os.PathLike[str]


@dataclasses.dataclass(frozen=True, eq=False)
class TriggerSet:
    """A watermark set: images with the labels the owner's model is trained to give them.

    Attributes:
        images: ``uint8`` array ``(N, H, W, C)``, same ``H, W, C`` as the task's data.
        labels: ``int32`` array ``(N,)`` of owner-chosen labels.
        kind: One of ``TRIGGER_KINDS``.
        params: The :func:`make_trigger_set` arguments needed to rebuild the set (no secret).
    """

    images: np.ndarray
    labels: np.ndarray
    kind: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        images = np.asarray(self.images)
        labels = np.asarray(self.labels)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise TriggerSetError(
                f"images must be a uint8 array (N, H, W, C); got {images.dtype} {images.shape}"
            )
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise TriggerSetError(
                f"labels must be a 1-D integer array; got {labels.dtype} {labels.shape}"
            )
        if len(labels) != len(images):
            raise TriggerSetError(f"labels has {len(labels)} entries but images has {len(images)}")
        if self.kind not in TRIGGER_KINDS:
            raise TriggerSetError(f"kind must be one of {TRIGGER_KINDS}; got {self.kind!r}")
        k = self.params.get("num_classes")
        if k is not None and labels.size and (labels.min() < 0 or labels.max() >= k):
            raise TriggerSetError(f"labels must lie in [0, {k}) (params num_classes={k})")
        # Read-only copies: a frozen set whose arrays could change in place would make the
        # commitment meaningless. Tampering has to go through dataclasses.replace.
        images = images.copy()
        labels = labels.astype(np.int32)
        images.flags.writeable = False
        labels.flags.writeable = False
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "params", dict(self.params))

    def __len__(self) -> int:
        return len(self.labels)

    def commitment(self, version: int = 2) -> str:
        """Hex SHA-256 over the committed parameters, shapes, dtypes, image and label bytes.

        Format 2 (the default) also binds every parameter in ``COMMITTED_PARAMS`` that the set
        records (class count, label policy, target class, index, source-image digest), so none
        of them can be changed after the fact. Format 1 (jaxwm 0.1 manifests) binds only the
        kind, the images and the labels; it is kept so that sets embedded with 0.1 still verify.

        Args:
            version: Commitment format, 1 or 2.

        Returns:
            64 hex characters; equal for bit-identical sets, different for any changed pixel,
            label, shape, kind or (format 2) committed parameter.

        Example:
            >>> ts = make_trigger_set("noise", secret="k", size=2, image_shape=(8, 8, 1), num_classes=3)
            >>> len(ts.commitment())
            64
        """
        if version not in COMMITMENT_VERSIONS:
            raise TriggerSetError(f"commitment version must be one of {COMMITMENT_VERSIONS}")
        labels = self.labels.astype("<i4")  # fixed byte order: the hash must not depend on the host
        head: tuple[bytes, ...] = (DOMAIN + b"/commitment",)
        if version == 2:
            params = {k: self.params[k] for k in COMMITTED_PARAMS if k in self.params}
            head = (DOMAIN + b"/commitment-v2", json.dumps(params, sort_keys=True).encode())
        return hashlib.sha256(
            framed(
                *head,
                self.kind.encode(),
                json.dumps(list(self.images.shape)).encode(),
                self.images.dtype.str.encode(),
                np.ascontiguousarray(self.images).tobytes(),
                json.dumps(list(labels.shape)).encode(),
                labels.dtype.str.encode(),
                labels.tobytes(),
            )
        ).hexdigest()


def generate_secret() -> str:
    """Return a fresh 256-bit owner secret (hex).

    A manifest commits to a set derived from the secret, so a guessable secret could be found by
    trying candidates against the commitment; use a random one and store it offline.

    Returns:
        64 hex characters from the operating system's CSPRNG.

    Example:
        >>> len(generate_secret())
        64
    """
    return secrets.token_hex(32)


def secret_bits(secret: str) -> float:
    """A floor-style estimate of a secret's strength in bits, from its length and alphabet.

    Hex strings count 4 bits a character, base64/base64url strings 6, anything else 6.5 (the
    printable ASCII range). This is a length check, not an entropy measurement: a long but
    guessable passphrase passes it. Use :func:`generate_secret`.

    Args:
        secret: The owner's key.

    Returns:
        Estimated bits; 0 for strings with fewer than 8 distinct characters.

    Example:
        >>> secret_bits(generate_secret())
        256.0
    """
    if len(set(secret)) < 8:
        return 0.0
    if all(c in "0123456789abcdefABCDEF" for c in secret):
        per = 4.0
    elif all(c.isascii() and (c.isalnum() or c in "+/=_-") for c in secret):
        per = 6.0
    else:
        per = 6.5
    return per * len(secret)


def check_secret_strength(secret: str) -> None:
    """Refuse a secret under ``MIN_SECRET_BITS`` bits (the demo's public key excepted).

    A short key can be searched: anybody who guesses it can regenerate the set, and a claimant
    can try many keys against a suspect. Embedding uses this check; verification does not, so
    sets embedded earlier still verify.

    Args:
        secret: The owner's key.

    Raises:
        TriggerSetError: The key is estimated under 128 bits (:func:`secret_bits`).

    Example:
        >>> check_secret_strength(generate_secret())
    """
    if secret == DEMO_SECRET:
        return
    bits = secret_bits(secret)
    if bits < MIN_SECRET_BITS:
        raise TriggerSetError(
            f"the watermark secret is too weak (about {bits:.0f} bits, need {MIN_SECRET_BITS}); "
            "make one with: python -c 'from jaxwm.triggers import generate_secret; "
            "print(generate_secret())'"
        )


def source_digest(images: np.ndarray, labels: np.ndarray | None) -> str:
    """SHA-256 over the source images (and labels) a data-derived trigger set draws from.

    Committed in the manifest, so verification can say "these are not the source images used
    at embedding" instead of a bare commitment mismatch, and a claimant cannot swap the pool.

    Args:
        images: ``uint8`` array ``(N, H, W, C)``.
        labels: Their labels, or ``None``.

    Returns:
        64 hex characters.

    Example:
        >>> len(source_digest(np.zeros((2, 4, 4, 1), np.uint8), np.array([0, 1])))
        64
    """
    lab = b"none" if labels is None else np.asarray(labels).astype("<i8").tobytes()
    return hashlib.sha256(
        framed(
            DOMAIN + b"/source",
            json.dumps(list(images.shape)).encode(),
            images.dtype.str.encode(),
            np.ascontiguousarray(images).tobytes(),
            lab,
        )
    ).hexdigest()


def chance_level(params: dict[str, Any]) -> float:
    """The per-trigger match probability the 1/K binomial test assumes for an innocent model.

    ``1/K`` for abstract images (labels drawn independently of any image content); ``1/(K-1)``
    for data-derived sets (``content``, ``unrelated``, ``folder``), whose labels avoid the
    image's source class, so a model that never predicts the true class could match one of the
    K-1 others at that rate. With ``K = 2`` that is 1: the binomial test then proves nothing and
    only the control and permutation tests can decide.

    Args:
        params: A set's ``params`` (or a manifest): ``kind`` and ``num_classes``.

    Returns:
        The chance level in ``(0, 1]``.

    Example:
        >>> chance_level({"kind": "noise", "num_classes": 10}), chance_level({"kind": "content", "num_classes": 11})
        (0.1, 0.1)
    """
    k = int(params["num_classes"])
    return 1.0 / k if params["kind"] == "noise" else 1.0 / (k - 1)


def _assign_labels(
    stream: KeyedStream, n: int, k: int, policy: str, target: int, avoid: np.ndarray | None
) -> np.ndarray:
    if policy == "target":
        return np.full(n, target)
    if avoid is None:
        return stream.integers(0, k, n)
    # Shift by 1..K-1 from the source label: uniform over the K-1 other classes, no rejection loop.
    # Source labels outside [0, K) (e.g. another data set's classes) cannot clash with any label.
    shifted = (avoid + 1 + stream.integers(0, k - 1, n)) % k
    fresh = stream.integers(0, k, n)
    return np.where((avoid >= 0) & (avoid < k), shifted, fresh)


def make_trigger_set(
    kind: str,
    *,
    secret: str,
    size: int,
    image_shape: tuple[int, int, int],
    num_classes: int,
    label_policy: str = "random",
    target_class: int = 0,
    source_images: np.ndarray | None = None,
    source_labels: np.ndarray | None = None,
    index: int = 0,
) -> TriggerSet:
    """Build a trigger set deterministically from the owner's secret.

    Kinds: ``noise`` (abstract images, Adi et al. 2018); ``content`` (keyed stamp on in-distribution
    ``source_images``, Zhang et al. 2018); ``unrelated`` (out-of-distribution ``source_images``
    resized and channel-converted to ``image_shape``); ``folder`` (``source_images`` and
    ``source_labels`` taken as is, the first ``size`` of them; the secret is not used).

    An assigned label never equals the image's source label (where one exists in ``[0, K)``):
    ``random`` draws among the other classes, and ``target`` skips sources already of
    ``target_class``. Otherwise an innocent model would score on those triggers by being accurate.

    Args:
        kind: One of ``TRIGGER_KINDS``.
        secret: The owner's key; the same key gives a bit-identical set.
        size: Number of triggers.
        image_shape: ``(H, W, C)`` of the task's images.
        num_classes: Number of classes ``K >= 2`` of the task.
        label_policy: ``"random"`` (uniform labels, the binomial chance ``1/K`` holds exactly for
            any innocent model) or ``"target"`` (every label is ``target_class``).
        target_class: The label under the ``target`` policy.
        source_images: ``uint8`` images; required for ``content``, ``unrelated`` and ``folder``.
        source_labels: Their labels; required for ``content`` and ``folder``, optional for
            ``unrelated``.
        index: Distinguishes several sets of one owner (different index, different set).

    Returns:
        The :class:`TriggerSet`, whose ``params`` record these arguments (without the secret).

    Example:
        >>> ts = make_trigger_set("noise", secret="k", size=4, image_shape=(32, 32, 3), num_classes=10)
        >>> ts.images.shape, ts.labels.dtype
        ((4, 32, 32, 3), dtype('int32'))
    """
    return make_trigger_sets(
        kind, keys=[secret], size=size, image_shape=image_shape, num_classes=num_classes,
        label_policy=label_policy, target_class=target_class, source_images=source_images,
        source_labels=source_labels, index=index,
    )[0]  # fmt: skip


def make_trigger_sets(
    kind: str,
    *,
    keys: Sequence[str],
    size: int,
    image_shape: tuple[int, int, int],
    num_classes: int,
    label_policy: str = "random",
    target_class: int = 0,
    source_images: np.ndarray | None = None,
    source_labels: np.ndarray | None = None,
    index: int = 0,
) -> list[TriggerSet]:
    """:func:`make_trigger_set` for each key in ``keys``, from one source pool checked and
    hashed once.

    Control sets draw 1,000 sets from one pool for a ``content`` rank test; building them one by
    one hashed the whole pool once per set (137 s of a 306 s study unit on MNIST, measured).

    Args:
        kind: As for :func:`make_trigger_set`.
        keys: The secrets, one set each (the same key gives a bit-identical set).
        size, image_shape, num_classes, label_policy, target_class, source_images,
        source_labels, index: As for :func:`make_trigger_set`, shared by every set.

    Returns:
        One :class:`TriggerSet` per key, in order; each equals ``make_trigger_set`` with that key.

    Example:
        >>> [len(t) for t in make_trigger_sets("noise", keys=["a", "b"], size=3,
        ...                                    image_shape=(8, 8, 1), num_classes=10)]
        [3, 3]
    """
    if kind not in TRIGGER_KINDS:
        raise TriggerSetError(f"kind must be one of {TRIGGER_KINDS}; got {kind!r}")
    if label_policy not in LABEL_POLICIES:
        raise TriggerSetError(f"label_policy must be one of {LABEL_POLICIES}; got {label_policy!r}")
    if isinstance(keys, str):  # a lone key would become one set per character
        raise TriggerSetError("keys must be a sequence of secrets, not one str")
    keys = list(keys)
    if any(not isinstance(key, str) or not key for key in keys):
        raise TriggerSetError("secret must be a non-empty str; create one with generate_secret()")
    size = check_int("size", size, 1)
    shape = check_image_shape(image_shape)
    k = check_int("num_classes", num_classes, 2)
    target_class = check_int("target_class", target_class, 0, k)
    index = check_int("index", index, 0)
    params = {"kind": kind, "size": size, "image_shape": list(shape), "num_classes": k,
              "label_policy": label_policy, "target_class": target_class, "index": index}  # fmt: skip
    if kind != "noise" and source_images is None:
        raise TriggerSetError(
            f"source_images is required for kind={kind!r}; load them first (e.g. load_idx_images)"
        )

    if kind == "noise":
        out = []
        for key in keys:
            stream = KeyedStream(key, kind, index)
            labels = _assign_labels(stream, size, k, label_policy, target_class, None)
            images = np.stack([abstract_image(stream, shape) for _ in range(size)])
            out.append(TriggerSet(images, labels, kind, dict(params)))
        return out

    src = as_nhwc(source_images, "source_images")
    if kind in ("folder", "content") and src.shape[1:] != shape:
        raise TriggerSetError(f"source_images must have image shape {shape}; got {src.shape[1:]}")
    if kind == "unrelated" and (shape[2] not in (1, 3) or src.shape[-1] not in (1, 3)):
        raise TriggerSetError(
            "image_shape and source_images need 1 or 3 channels for kind='unrelated'; "
            f"got {shape[2]} and {src.shape[-1]}"
        )
    if source_labels is None and kind != "unrelated":
        # Content labels must differ from the true class, or an innocent model scores on them.
        raise TriggerSetError(f"source_labels is required for kind={kind!r}")
    lab = None if source_labels is None else as_labels(source_labels, len(src), "source_labels")
    if kind != "unrelated" and lab.size and (lab.min() < 0 or lab.max() >= k):
        raise TriggerSetError(f"source_labels must lie in [0, {k}) (num_classes={k})")
    params["source_digest"] = source_digest(src, lab)  # once for every key
    if kind == "folder":
        # A folder set's labels are the user's own: no policy, no target class.
        params["label_policy"] = "given"
        params.pop("target_class")
        if size > len(src):
            raise TriggerSetError(f"size={size} exceeds the {len(src)} images of the folder set")
        return [TriggerSet(src[:size], lab[:size], kind, dict(params)) for _ in keys]

    pool = np.arange(len(src))
    if label_policy == "target" and lab is not None:
        pool = pool[lab != target_class]
    if size > len(pool):
        why = f" (not already labelled target_class={target_class})" if len(pool) < len(src) else ""
        raise TriggerSetError(f"size={size} exceeds the {len(pool)} eligible source_images{why}")
    out = []
    for key in keys:
        stream = KeyedStream(key, kind, index)
        chosen = pool[stream.sample(len(pool), size)]
        avoid = None if lab is None else lab[chosen]
        labels = _assign_labels(stream, size, k, label_policy, target_class, avoid)
        if kind == "content":
            top, left, patch = content_stamp(key, shape, index=index)
            images = src[chosen].copy()
            images[:, top : top + patch.shape[0], left : left + patch.shape[1], :] = patch
        else:
            images = np.stack([resize_convert(src[i], shape) for i in chosen])
        out.append(TriggerSet(images, labels, kind, dict(params)))
    return out
