"""What ``attack`` and ``verify`` read must come from one run: models and manifests together.

A pipeline or embed run directory is bound to its config (:mod:`jaxwm.runner.fingerprint`), so a
rerun cannot leave another run's files beside its own. These checks refuse what such a directory
could still hold when written by hand or by a jaxwm before fingerprints: a manifest the run's
``DIGEST.txt`` does not commit to, or a method model made with other fields or other sets than
the manifests beside it. Each refusal is one line naming the file and what to do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jaxwm.errors import ConfigError, ManifestError
from jaxwm.manifest import publication_digest, read_manifest
from jaxwm.runner import fingerprint

DIGEST_FILE = "DIGEST.txt"


def manifest_digest(directory: Path) -> str:
    """The publication digest of every ``manifest*.json`` in ``directory``, in index order."""
    loaded = [read_manifest(f) for f in sorted(Path(directory).glob("manifest*.json"))]
    if not loaded:
        raise ManifestError(f"no manifest*.json in the directory {str(directory)!r}")
    loaded.sort(key=lambda m: m.get("index", 0))
    return publication_digest(loaded)


def check_manifest_dir(directory: Path, manifests: list[dict[str, Any]]) -> None:
    """Refuses a directory whose manifests are not the set its run's ``DIGEST.txt`` names.

    Args:
      directory: A directory given as ``verify.manifest`` (an embed run, a pipeline's
        ``watermark/``).
      manifests: The manifests read from it, in index order.

    Raises:
      ManifestError: ``DIGEST.txt`` is there and names another set (a manifest left by an
        earlier run, or one missing).
    """
    path = Path(directory) / DIGEST_FILE
    if not path.is_file():  # a directory the owner assembled: the digest they give decides
        return
    recorded = path.read_text().strip()
    got = publication_digest(manifests)
    if got != recorded:
        raise ManifestError(
            f"the manifest*.json files in {str(directory)!r} are not the set its {DIGEST_FILE} "
            f"commits to ({got} vs {recorded}): a manifest from another run is there or one is "
            "missing; pass the manifest files of one run, or rerun the run that wrote them"
        )


def check_pipeline_source(src: Path, schemes: tuple[str, ...] | list[str]) -> None:
    """Refuses a pipeline directory whose method models and manifests are not from one run.

    Every scheme's model must carry an ``embed`` fingerprint for that method; all of them must
    agree with each other and with the directory's own ``fingerprint.json`` (when present), and
    each must record the digest of the manifests in ``watermark/`` (models saved before jaxwm
    recorded it are checked against ``watermark/DIGEST.txt``).

    Args:
      src: ``attack.source``.
      schemes: The method directories the attack reads.

    Raises:
      ConfigError: naming the model or manifest that does not belong, and what to do.
    """
    src = Path(src)
    hint = (
        f"rerun mode=pipeline on {str(src)!r} with its config (it reuses the victim), or point "
        "attack.source at one pipeline run"
    )
    digest = manifest_digest(src / "watermark")
    pipe = fingerprint.stored(src)
    shared = None
    if pipe is not None and pipe.get("kind") == "pipeline":
        shared = {k: v for k, v in pipe["fields"].items() if k not in fingerprint.PIPELINE_ONLY}
    for scheme in schemes:
        label = f"attack.source model {str(src / scheme)!r}"
        rec = fingerprint.model_record(src / scheme)
        if rec is None or rec.get("kind") != "embed":
            raise ConfigError(f"{label} has no record of the run that embedded it; {hint}")
        fields = dict(rec["fields"])
        if fields.pop("embed.method", None) != scheme:
            raise ConfigError(f"{label} was not embedded by method {scheme!r}; {hint}")
        if shared is None:
            shared = fields  # the first model speaks for the run when no fingerprint.json
        elif fields != shared:
            diff = "; ".join(fingerprint.differences(shared, fields))
            raise ConfigError(f"{label} was made by another run ({diff}); {hint}")
        meta = json.loads((src / scheme / "model" / "meta.json").read_text())
        recorded = meta.get("watermark", {}).get("digest")
        if recorded is None:  # saved before models recorded it: the run's DIGEST.txt
            path = src / "watermark" / "DIGEST.txt"
            recorded = path.read_text().strip() if path.is_file() else None
        if recorded != digest:
            raise ConfigError(
                f"{label} was embedded with other watermark sets than the manifests in "
                f"{str(src / 'watermark')!r} ({recorded} vs {digest}); {hint}"
            )
