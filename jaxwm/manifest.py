"""Manifests: the public record of a trigger set, and the check that a set matches it.

:func:`write_manifest` publishes a set's parameters and SHA-256 commitment (never the owner's
key); :func:`regenerate` rebuilds the set from the manifest and the key and refuses it unless
the commitment matches, so what is shown in a dispute is provably the set fixed at embedding.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxwm.triggers import TriggerSet, TriggerSetError, make_trigger_set

MANIFEST_VERSION = 1
PathLike = str | os.PathLike[str]


class CommitmentError(TriggerSetError):
    """A trigger set does not match the commitment recorded in its manifest."""


class ManifestError(TriggerSetError):
    """A manifest file is missing, unreadable or incomplete."""


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
    manifest: dict[str, Any] = {
        "version": MANIFEST_VERSION,
        "kind": trigger_set.kind,
        "size": len(trigger_set),
        "image_shape": list(trigger_set.images.shape[1:]),
        "num_classes": int(p["num_classes"]),
    }
    if trigger_set.kind != "folder":  # a folder set's labels are the user's, not a policy's
        manifest["label_policy"] = p.get("label_policy", "random")
        manifest["index"] = int(p.get("index", 0))
        if manifest["label_policy"] == "target":
            manifest["target_class"] = int(p.get("target_class", 0))
    manifest["commitment"] = trigger_set.commitment()
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
    if data["version"] != MANIFEST_VERSION:
        raise ManifestError(
            f"manifest file {str(path)!r} has version {data['version']}; this jaxwm reads {MANIFEST_VERSION}"
        )
    return data


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
    actual, expected = trigger_set.commitment(), str(manifest["commitment"])
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
    missing = [key for key in _REQUIRED if key not in m]
    if missing:
        raise ManifestError(f"manifest lacks fields {missing}")
    ts = make_trigger_set(
        m["kind"],
        secret=secret,
        size=m["size"],
        image_shape=tuple(m["image_shape"]),
        num_classes=m["num_classes"],
        label_policy=m.get("label_policy", "random"),
        target_class=m.get("target_class", 0),
        source_images=source_images,
        source_labels=source_labels,
        index=m.get("index", 0),
    )
    check_commitment(ts, m)
    return ts
