"""Modes ``digest``, ``export`` and ``verify``: the owner's side of a dispute.

The protocol (README, "Verification protocol"): before releasing a model the owner publishes
the digest that mode ``digest`` prints; in a dispute mode ``export`` writes the queries (the
owner's triggers and control triggers from fresh keys, interleaved in a keyed order) for the
suspect's API, and mode ``verify`` decides from the suspect's weights (``verify.model``), a file
of its answers (``verify.answers``) or a live endpoint (``verify.endpoint``).

A verdict needs every test of :mod:`jaxwm.verify` that applies, Holm-corrected over the sets
tested. With a published digest it is decided at ``verify.alpha``; without one at
``verify.alpha_unpublished``, because a claimant could have tried keys until one matched.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from jaxwm import blackbox, controls, triggers, verify
from jaxwm.engine import train
from jaxwm.errors import ConfigError, ManifestError
from jaxwm.manifest import (
    check_publication,
    publication_digest,
    read_manifest,
    regenerate,
)
from jaxwm.runner import config, experiments, provenance, runs

UNPUBLISHED_NOTE = (
    "Without a digest published before the suspect's release, a claimant could have tried many "
    "keys until one matched this suspect (or, for kind=folder, picked adversarial trigger "
    "images), so this verdict is decided at the stricter alpha_unpublished."
)
PUBLISHED_NOTE = (
    "The manifests match the digest given ({digest}). jaxwm cannot check dates: this verdict "
    "at verify.alpha holds only if that digest was published before the suspect was released "
    "(anyone can compute a digest of their own manifests after the fact)."
)
CLUSTERED_NOTE = (
    "Set {i} is a content set: its triggers share one keyed stamp, so the key is the unit and "
    "the control test ranks the owner's set among {b} fresh-key sets (p >= 1/({b}+1); at "
    "alpha={alpha:g} this needs a published digest)."
)
FOLDER_NOTE = (
    "Set {i} is a folder set (kind=folder): it has no generator, so no control test was "
    "possible; a claimant's own images could be adversarial examples that transfer to "
    "independent models (Liu et al., USENIX Security 2024)."
)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_manifests(path: str) -> list[tuple[Path, dict]]:
    """One manifest file, or every ``manifest*.json`` of a directory in index order."""
    if not path:
        raise ConfigError("this mode needs verify.manifest: a manifest file or directory")
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("manifest*.json"))
        if not files:
            raise ManifestError(f"no manifest*.json in the directory {str(p)!r}")
    else:
        files = [p]
    loaded = [(f, read_manifest(f)) for f in files]
    loaded.sort(key=lambda fm: (fm[1].get("index", 0), str(fm[0])))
    if p.is_dir():  # only the set its run committed to, never one left by an earlier run
        provenance.check_manifest_dir(p, [m for _, m in loaded])
    ks = {m["num_classes"] for _, m in loaded}
    if len(ks) != 1:
        raise ManifestError(f"the manifests in {path!r} disagree on num_classes: {sorted(ks)}")
    return loaded


def _sources(cfg, manifests) -> tuple[Any, Any]:
    kinds = {m["kind"] for _, m in manifests}
    if kinds == {"noise"}:
        return None, None
    if len(kinds) > 1:
        raise ManifestError(f"the manifests mix trigger kinds {sorted(kinds)}; verify each apart")
    ds = experiments.load_data(cfg)
    sub = ml_collections.ConfigDict(cfg.to_dict())
    sub.watermark.kind = kinds.pop()
    return runs.trigger_sources(sub, ds)


def decision_level(cfg: ml_collections.ConfigDict) -> float:
    """``verify.alpha`` with a published digest, else ``verify.alpha_unpublished``.

    A verdict's level is not the claimant's to loosen: mode ``verify`` refuses levels above the
    defaults (research modes such as ``attack`` may use any).
    """
    for field in ("alpha", "alpha_unpublished"):
        value, default = cfg.verify[field], config.defaults().verify[field]
        if value > default:
            raise config.ConfigError(
                f"verify.{field}={value:g} is looser than the default {default:g}; a verdict's "
                "level is not the claimant's to raise (use a smaller one, or mode=attack/pipeline "
                "for research)"
            )
    return cfg.verify.alpha if cfg.verify.digest else cfg.verify.alpha_unpublished


def evidence(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """Regenerated sets, their controls and the keyed query plan, shared by export and verify."""
    manifests = load_manifests(cfg.verify.manifest)
    key = config.secret(cfg)
    images, labels = _sources(cfg, manifests)
    sets, ctl = [], []
    for _, m in manifests:
        ts = regenerate(m, secret=key, source_images=images, source_labels=labels)
        sets.append(ts)
        # Fixed count and seed: a claimant who could choose them could also search them for
        # controls the suspect happens to match less often.
        count = controls.control_count(ts.kind, decision_level(cfg))
        ctl.append(controls.control_sets(ts.params, key, count=count, source_images=images,
                                         source_labels=labels))  # fmt: skip
    plan = controls.query_plan(sets, ctl, key)
    return {"manifests": manifests, "sets": sets, "plan": plan,
            "num_classes": int(manifests[0][1]["num_classes"])}  # fmt: skip


def run_digest(cfg: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Mode ``digest``: print the string to publish before releasing the watermarked model."""
    manifests = load_manifests(cfg.verify.manifest)
    digest = publication_digest([m for _, m in manifests])
    out = {"digest": digest, "manifests": [str(p) for p, _ in manifests]}
    experiments.write_json(workdir / "digest.json", out)
    print(digest)
    _say(
        f"publish this digest of {len(manifests)} manifest(s) before releasing the model (a "
        "paper, a registry, a signed git tag); in a dispute pass it as --config.verify.digest"
    )
    return out


def run_export(cfg: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Mode ``export``: PNG queries for the suspect's API, in a keyed order, with an index."""
    ev = evidence(cfg)
    plan = ev["plan"]
    index = blackbox.export_queries(workdir / "queries", plan.images)
    n_owner = sum(len(o) for o in plan.owner)
    out = {"queries": str(index.parent), "index": str(index), "count": len(plan.images),
           "owner_triggers": n_owner, "control_triggers": len(plan.images) - n_owner}  # fmt: skip
    experiments.write_json(workdir / "export.json", out)
    print(
        f"{len(plan.images)} query images in {index.parent} ({n_owner} triggers and "
        f"{len(plan.images) - n_owner} controls, mixed in a keyed order); send them to the "
        "suspect in index order, save its answers (CSV/JSON/NPY of labels or logits), then run "
        f"mode=verify with --config.verify.answers=<file>"
    )
    return out


def _suspect_answers(cfg, plan, k: int) -> tuple[np.ndarray, str]:
    given = [f for f in ("model", "answers", "endpoint") if getattr(cfg.verify, f)]
    if len(given) != 1:
        raise ConfigError(
            "mode=verify needs exactly one suspect: verify.model (a run directory), "
            f"verify.answers (a file of answers) or verify.endpoint (a URL); got {given or 'none'}"
        )
    if cfg.verify.answers:
        # Rows that name their query file are matched to the export's order.
        index = Path(cfg.verify.answers).parent / "index.json"
        labels = blackbox.read_answers(
            cfg.verify.answers, len(plan.images), k, index=index if index.is_file() else None
        )
        return labels, f"answers file {cfg.verify.answers}"
    if cfg.verify.endpoint:
        _say(f"querying {cfg.verify.endpoint} with {len(plan.images)} images")
        labels = blackbox.query_endpoint(
            cfg.verify.endpoint, plan.images, k, timeout=cfg.verify.timeout,
            retries=cfg.verify.retries, rate_limit=cfg.verify.rate_limit or None,
        )  # fmt: skip
        return labels, f"endpoint {cfg.verify.endpoint}"
    return _model_labels(cfg.verify.model, plan.images, k, "suspect"), f"model {cfg.verify.model}"


def _model_labels(run_dir: str, images: np.ndarray, k: int, role: str) -> np.ndarray:
    """A saved model's labels on ``images``, with its own architecture and normalisation."""
    model, params, state, meta = runs.load_model_for(run_dir, channels=int(images.shape[-1]))
    norm = meta["normalization"]
    predict = train.make_predict(model.apply, norm["mean"], norm["std"])
    width = int(np.asarray(predict(params, state, images[:1])).shape[-1])
    if width != k:
        raise ConfigError(
            f"the {role} model in {run_dir} outputs {width} classes but the watermark set has "
            f"num_classes={k}; a verdict needs the class count the set was made for"
        )
    return verify.predict_labels(lambda x: predict(params, state, x), images)


def run_verify(cfg: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Mode ``verify``: the suspect + the owner's key and manifests -> verdict.json."""
    if not cfg.verify.manifest:
        raise ConfigError(
            "mode=verify needs verify.manifest (a manifest file or a directory of them)"
        )
    ev = evidence(cfg)
    plan, k, manifests = ev["plan"], ev["num_classes"], ev["manifests"]
    published = bool(cfg.verify.digest)
    if published:
        check_publication(cfg.verify.digest, [m for _, m in manifests])
    alpha = decision_level(cfg)
    answers, suspect = _suspect_answers(cfg, plan, k)
    owner_pred, control_pred = plan.split(answers)

    null_ret: list[list[float]] = [[] for _ in ev["sets"]]
    for run_dir in cfg.verify.nulls:
        pred = _model_labels(run_dir, plan.images, k, "null")
        owner_n, _ = plan.split(pred)
        for i, ts in enumerate(ev["sets"]):
            null_ret[i].append(verify.retention(owner_n[i], ts.labels))

    verdicts = []
    for i, ts in enumerate(ev["sets"]):
        has_ctl = len(plan.control[i]) > 0
        verdicts.append(verify.verify_predictions(
            owner_pred[i], ts.labels, k, alpha=alpha, chance=triggers.chance_level(ts.params),
            control_predicted=control_pred[i] if has_ctl else None,
            control_labels=plan.control_labels[i] if has_ctl else None,
            control_clustered=controls.clustered(ts.kind),
            null_retentions=null_ret[i] or None, fpr=cfg.verify.fpr,
            confidence=cfg.verify.confidence,
        ))  # fmt: skip
    owned, verdicts, summary = verify.decide_sets(verdicts, alpha)
    notes = [PUBLISHED_NOTE.format(digest=cfg.verify.digest.strip()) if published
             else UNPUBLISHED_NOTE]  # fmt: skip
    notes += [FOLDER_NOTE.format(i=i) for i, ts in enumerate(ev["sets"]) if ts.kind == "folder"]
    notes += [CLUSTERED_NOTE.format(i=i, alpha=alpha, b=len(plan.control[i]) // len(ts))
              for i, ts in enumerate(ev["sets"]) if controls.clustered(ts.kind)]  # fmt: skip
    if any(m.get("version", 1) < 2 for _, m in manifests):
        notes.append(
            "A version-1 manifest (jaxwm 0.1) commits only the images and labels; its class "
            "count was checked against the suspect's outputs instead."
        )
    out = {
        "suspect": suspect,
        "manifests": [str(p) for p, _ in manifests],
        "owned": owned,
        "reason": summary,
        "digest_matches": published,  # the manifests match verify.digest (dates are not checked)
        "published_digest": cfg.verify.digest.strip() or None,
        "alpha": alpha,
        "sets_tested": len(verdicts),
        "control_sets": controls.DEFAULT_CONTROL_SETS,
        "notes": notes,
        "sets": [v.to_dict() for v in verdicts],
    }
    experiments.write_json(workdir / "verdict.json", out)
    for i, v in enumerate(verdicts):
        print(f"set {i}: {v.reason}" if len(verdicts) > 1 else v.reason)
    if len(verdicts) > 1:
        print(summary)
    for note in notes:
        print(f"note: {note}")
    return out
