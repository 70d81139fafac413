"""Manifests: the public record of a trigger set, and the check that a set matches it.

:func:`write_manifest` records a set's parameters and SHA-256 commitment (never the owner's
key); :func:`regenerate` rebuilds the set from the manifest and the key and refuses it unless
the commitment matches, so what is shown in a dispute is provably the set fixed at embedding.

A manifest alone proves nothing about *when* it was made: its ``created`` field is the
writer's word, and a claimant could have tried many keys against a suspect before writing one.
:func:`publication_digest` is the short string an owner publishes before releasing the model (a
paper, a registry, a signed git tag); :func:`check_publication` ties a manifest to it later.

Format 2 commits every parameter that changes the verification test (class count, label
policy, target class, kind, index, image shape, a digest of the source images); format 1
(jaxwm 0.1) is still read, with its weaker commitment, so sets embedded with 0.1 stay verifiable.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxwm.errors import CommitmentError, ManifestError
from jaxwm.triggers import COMMITTED_PARAMS, TriggerSet, make_trigger_set

MANIFEST_VERSION = 2
READABLE_VERSIONS = (1, 2)
# A regenerated set is built in memory: bound it so a hostile manifest cannot ask for gigabytes.
MAX_TRIGGERS = 100_000
DIGEST_PREFIX = "jaxwm-wm2:"
PathLike = str | os.PathLike[str]


def write_manifest(
    path: PathLike,
    trigger_set: TriggerSet,
    *,
    secret_hint: str | None = None,
    extra: dict | None = None,
) -> dict:
    """Write the public description and commitment of a trigger set as JSON.

    The secret is never written; ``secret_hint`` is free text such as where the key is kept.

    Args:
        path: Destination file (parent folders are created).
        trigger_set: A set built by :func:`make_trigger_set`.
        secret_hint: Optional reminder of where the key lives (must not be the key).
        extra: Optional JSON-serialisable metadata (model id, data set, ...).

    Returns:
        The manifest as written.

    Example:
        >>> ts = make_trigger_set("noise", secret="k", size=2, image_shape=(8, 8, 1), num_classes=3)
        >>> write_manifest("wm.json", ts, secret_hint="vault 3")["size"]  # doctest: +SKIP
        2
    """
    p = dict(trigger_set.params)
    if "num_classes" not in p:
        raise ManifestError(
            "trigger_set.params lacks num_classes; build the set with make_trigger_set"
        )
    missing = [k for k in COMMITTED_PARAMS if k not in p and k not in _OPTIONAL_PARAMS]
    if missing:
        raise ManifestError(
            f"trigger_set.params lacks {missing}; build the set with make_trigger_set"
        )
    if p.get("size") != len(trigger_set) or list(p.get("image_shape", [])) != list(
        trigger_set.images.shape[1:]
    ):
        raise ManifestError("trigger_set.params do not describe its images (size, image_shape)")
    manifest: dict[str, Any] = {"version": MANIFEST_VERSION}
    manifest.update({k: p[k] for k in COMMITTED_PARAMS if k in p})
    manifest["commitment"] = trigger_set.commitment(version=MANIFEST_VERSION)
    manifest["created"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    if secret_hint is not None:
        manifest["secret_hint"] = str(secret_hint)
    manifest["extra"] = dict(extra or {})
    try:
        text = json.dumps(manifest, indent=2, sort_keys=True)
    except TypeError as err:
        raise ManifestError(f"extra must be JSON-serialisable: {err}") from None
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, out)  # atomic: a crash never leaves a half-written manifest
    return manifest


_REQUIRED = ("version", "kind", "size", "image_shape", "num_classes", "commitment")
_OPTIONAL_PARAMS = ("target_class", "source_digest")  # only for target sets / data-derived kinds


def read_manifest(path: PathLike) -> dict:
    """Read and validate a manifest written by :func:`write_manifest`.

    Args:
        path: The JSON file.

    Returns:
        The manifest dict.

    Example:
        >>> read_manifest("/tmp/wm.json")["kind"]  # doctest: +SKIP
        'noise'
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"manifest file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ManifestError(f"manifest file {str(path)!r} is not readable JSON: {err}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"manifest file {str(path)!r} must hold a JSON object")
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise ManifestError(f"manifest file {str(path)!r} lacks fields {missing}")
    _check_fields(data, repr(str(path)))
    return data


def _check_fields(m: Mapping[str, Any], where: str) -> None:
    missing = [key for key in _REQUIRED if key not in m]
    if missing:
        raise ManifestError(f"manifest {where} lacks fields {missing}")
    if m["version"] not in READABLE_VERSIONS:
        raise ManifestError(
            f"manifest {where} has version {m['version']!r}; this jaxwm reads {READABLE_VERSIONS}"
        )
    size = m["size"]
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_TRIGGERS:
        raise ManifestError(
            f"manifest {where}: size must be an int in [1, {MAX_TRIGGERS}]; got {size!r}"
        )
    if m["version"] >= 2:
        absent = [k for k in ("label_policy", "index") if k not in m]
        if m.get("label_policy") == "target" and "target_class" not in m:
            absent.append("target_class")
        if m["kind"] != "noise" and "source_digest" not in m:
            absent.append("source_digest")
        if absent:
            raise ManifestError(f"manifest {where} lacks fields {absent}")


def publication_digest(manifests: Sequence[Mapping[str, Any]]) -> str:
    """The short string an owner publishes before release, binding one or more manifests.

    It covers each manifest's commitment in order, and a commitment (format 2) covers every
    parameter of the test, so a digest published before the suspect existed proves that the
    sets were fixed then: nobody could have tried keys against the suspect afterwards.

    Args:
        manifests: The manifests of the sets to be tested together, in index order.

    Returns:
        ``"jaxwm-wm2:"`` followed by 32 hex characters (128 bits of SHA-256).

    Example:
        >>> publication_digest([{"commitment": "ab" * 32}])
        'jaxwm-wm2:...'  # doctest: +SKIP
    """
    if not manifests:
        raise ManifestError("publication_digest needs at least one manifest")
    h = hashlib.sha256(b"jaxwm-publication-v2")
    for m in manifests:
        if "commitment" not in m:
            raise ManifestError("manifest lacks the field 'commitment'")
        c = str(m["commitment"]).encode()
        h.update(len(c).to_bytes(8, "big") + c)
    return DIGEST_PREFIX + h.hexdigest()[:32]


def check_publication(published: str, manifests: Sequence[Mapping[str, Any]]) -> None:
    """Raise :class:`CommitmentError` unless ``published`` is these manifests' digest.

    Args:
        published: The digest as published (surrounding whitespace is ignored).
        manifests: The manifests tested together, in the same order as when it was made.

    Example:
        >>> m = [{"commitment": "ab" * 32}]
        >>> check_publication(publication_digest(m), m)
    """
    expected = publication_digest(manifests)
    if published.strip() != expected:
        raise CommitmentError(
            f"the published digest {published.strip()!r} does not match these manifests "
            f"({expected}): they are not the sets the owner published"
        )


def check_commitment(trigger_set: TriggerSet, manifest: Mapping[str, Any]) -> None:
    """Raise :class:`CommitmentError` unless the set matches the manifest's commitment.

    Args:
        trigger_set: The set to check (usually just regenerated from the key).
        manifest: A manifest dict.

    Example:
        >>> ts = make_trigger_set("noise", secret="k", size=2, image_shape=(8, 8, 1), num_classes=3)
        >>> check_commitment(ts, {"commitment": ts.commitment()})
    """
    if "commitment" not in manifest:
        raise ManifestError("manifest lacks the field 'commitment'")
    version = manifest.get("version", MANIFEST_VERSION)
    if version not in READABLE_VERSIONS:
        raise ManifestError(f"manifest version {version!r} is not one of {READABLE_VERSIONS}")
    actual, expected = trigger_set.commitment(version=version), str(manifest["commitment"])
    if actual != expected:
        raise CommitmentError(
            "the trigger set regenerated from this key does not match the manifest "
            f"(wrong key, different source images, or a tampered set): set {actual} != manifest {expected}"
        )


def regenerate(
    manifest: Mapping[str, Any] | PathLike,
    *,
    secret: str,
    source_images: np.ndarray | None = None,
    source_labels: np.ndarray | None = None,
) -> TriggerSet:
    """Rebuild a trigger set from its manifest and the key, and check its commitment.

    Args:
        manifest: A manifest dict or the path of a manifest file.
        secret: The owner's key.
        source_images: The same source images as at creation (all kinds but ``noise``).
        source_labels: The same source labels as at creation, where they were given.

    Returns:
        The verified :class:`TriggerSet`.

    Example:
        >>> ts = regenerate("/tmp/wm.json", secret="k")  # doctest: +SKIP
    """
    m = read_manifest(manifest) if isinstance(manifest, str | os.PathLike) else manifest
    _check_fields(m, "dict" if isinstance(m, Mapping) else repr(str(manifest)))
    policy = m.get("label_policy", "random")
    ts = make_trigger_set(
        m["kind"],
        secret=secret,
        size=m["size"],
        image_shape=tuple(m["image_shape"]),
        num_classes=m["num_classes"],
        label_policy="random" if policy == "given" else policy,
        target_class=m.get("target_class", 0),
        source_images=source_images,
        source_labels=source_labels,
        index=m.get("index", 0),
    )
    if m["version"] >= 2 and "source_digest" in m:
        got = ts.params.get("source_digest")
        if got != m["source_digest"]:
            raise CommitmentError(
                "the source images given are not the ones this set was drawn from (their digest "
                f"{got} != manifest {m['source_digest']}); load the same dataset as at embedding"
            )
    check_commitment(ts, m)
    return ts
