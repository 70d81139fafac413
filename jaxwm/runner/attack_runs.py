"""Mode ``attack``: sweep watermark-removal attacks over a finished pipeline run.

Reads ``attack.source`` (a ``pipeline`` run directory: ``victim/``, ``partitioned/``,
``baseline/``, ``watermark/manifest0.json``), regenerates the owner's trigger set from the secret,
and attacks each watermarked model with every kind in ``attack.kinds`` at every strength. The
attacker's data is a held-out share (``attack.data_fraction``) of the *test* set; clean accuracy
is measured on the rest, so attacker data never overlaps evaluation data; with
``attack.data_split=train`` the attacker gets a share of the *training* set instead and the
whole test set evaluates (:func:`attacker_data`).

Each point is verified as the owner would (:func:`jaxwm.verify.verify_predictions`: the control
test against fresh-key triggers, the permutation test, and the null threshold fitted on the
victim and any other independent models; at ``verify.alpha``, i.e. assuming the owner published
the digest before release) and scored by the Watermark-Robustness-Toolbox criterion (Lukas et
al. 2022): an attack *succeeds* when ownership can no longer be shown while clean accuracy fell
by at most ``attack.max_acc_drop`` against the unattacked watermarked model. Each point's record
is appended to ``attacks.jsonl`` as soon as it is measured, and a rerun skips the points recorded
there (:mod:`jaxwm.runner.attack_store`); at the end ``attacks.json``, ``attacks.csv``,
``attacks.md`` and the plots of :mod:`jaxwm.runner.plots` are written from those records.
``attack.save_models`` also saves each attacked model under ``attacked/``. The attacks themselves (functions, units, strengths fields) are the entries
of :mod:`jaxwm.runner.attack_registry`.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from jaxwm import controls, triggers, verify
from jaxwm.engine import checkpoint, train
from jaxwm.errors import ConfigError
from jaxwm.manifest import read_manifest, regenerate
from jaxwm.runner import (
    attack_registry,
    attack_store,
    config,
    experiments,
    fingerprint,
    plots,
    provenance,
    runs,
)
from jaxwm.runner.attack_registry import AttackContext
from jaxwm.runner.attack_tables import CSV_FIELDS, summarize, summary_table
from jaxwm.stats import binomial_pvalue

PyTree = Any


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def split_attacker(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Splits ``n`` test examples into the attacker's share and the evaluation share.

    Args:
      n: Size of the test set.
      fraction: Share given to the attacker, in (0, 1).
      seed: Seed of the random permutation.

    Returns:
      ``(attacker_indices, eval_indices)``, sorted, disjoint, covering ``range(n)``; both
      non-empty.
    """
    n_att = int(round(fraction * n))
    if not 0 < n_att < n:
        raise ConfigError(
            f"attack.data_fraction={fraction} of the {n} test images leaves the attacker or the "
            "evaluation without data; pick a fraction that keeps both non-empty"
        )
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:n_att]), np.sort(perm[n_att:])


def attacker_data(
    ds: Any, split: str, fraction: float, seed: int, eval_images: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """The attacker's images and the evaluation images, from disjoint sources.

    ``split="test"``: a ``fraction`` share of the test set (:func:`split_attacker`), the rest
    evaluates. ``split="train"`` (Adi et al.'s attacker fine-tunes on the training set): a
    ``fraction`` share of the training set (1 = all of it, as Adi et al.), and the whole test
    set evaluates -- the attacker never sees an evaluation image either way.

    Args:
      ds: The :class:`jaxwm.data.Dataset`.
      split: "test" or "train".
      fraction: Share of ``split`` given to the attacker.
      seed: Seed of the share's random permutation.
      eval_images: 0: every evaluation image; ``n > 0``: a random ``n`` of them, drawn with
        ``seed`` (so every attack point, scheme and rerun uses the same ones). Clean accuracy
        on 2,000 images has a standard error of about 0.7 points at 90%.

    Returns:
      ``(x_att, y_att, x_eval, y_eval, info)``; ``info`` names the splits and holds the
      attacker's indices into its split.
    """
    if split == "test":
        att, ev = split_attacker(len(ds.test_labels), fraction, seed)
        x_att, y_att = ds.test_images[att], ds.test_labels[att]
        x_eval, y_eval = ds.test_images[ev], ds.test_labels[ev]
    elif split == "train":
        n = len(ds.train_labels)
        att = np.sort(np.random.default_rng(seed).permutation(n)[: max(1, round(fraction * n))])
        x_att, y_att = ds.train_images[att], ds.train_labels[att]
        x_eval, y_eval = ds.test_images, ds.test_labels
    else:
        raise ConfigError(f"attack.data_split must be 'test' or 'train', got {split!r}")
    available = len(y_eval)
    if eval_images:
        if not 0 < eval_images <= available:
            raise ConfigError(
                f"attack.eval_images={eval_images} but the evaluation share holds {available} "
                "images; pick at most that many, or 0 for all of them"
            )
        # A fixed subset (its own stream, so the attacker's share is the same with or without it)
        keep = np.sort(np.random.default_rng([seed, 1]).permutation(available)[:eval_images])
        x_eval, y_eval = x_eval[keep], y_eval[keep]
    info = {"fraction": fraction, "attacker_split": split, "eval_split": "test",
            "attacker": len(y_att), "eval": len(y_eval), "eval_available": available,
            "attacker_indices": att.tolist()}  # fmt: skip
    return x_att, y_att, x_eval, y_eval, info


def decision_threshold(
    n: int, num_classes: int, alpha: float, null_thr: float | None, chance: float | None = None
) -> float:
    """The smallest retention that passes the binomial test and the null threshold.

    A necessary condition for ownership, drawn in the plots: both rules are monotone in the
    number of matches ``k``, so they give one cut-off ``k_min / n``. The control and
    permutation tests (which depend on the attacked model's answers) may ask for more.

    Args:
      n: Number of triggers.
      num_classes: ``K``.
      alpha: Significance level.
      null_thr: Null-model threshold (:func:`jaxwm.verify.null_threshold`), or None.
      chance: Binomial chance per trigger (default ``1/K``).

    Returns:
      ``k_min / n``, or ``inf`` when no retention would be owned.
    """
    chance = 1.0 / num_classes if chance is None else chance
    for k in range(n + 1):
        if binomial_pvalue(k, n, chance) < alpha and (null_thr is None or k / n > null_thr):
            return k / n
    return math.inf


def wrt_success(
    owned: bool,
    accuracy: float,
    reference_accuracy: float,
    max_drop: float = 0.05,
) -> bool:
    """Watermark-Robustness-Toolbox success: watermark removed, model still useful.

    Args:
      owned: The owner's verdict on the attacked model.
      accuracy: Its clean accuracy.
      reference_accuracy: Clean accuracy of the unattacked watermarked model.
      max_drop: Largest tolerated clean-accuracy loss, as a fraction (0.05 = 5 points).

    Returns:
      True when ownership is lost and accuracy fell by at most ``max_drop``.
    """
    return bool(not owned and reference_accuracy - accuracy <= max_drop + 1e-9)


def progress_bar(total: int, enabled: bool) -> tqdm:
    """A bar over the points still to run, as the training loop draws it (on stderr).

    The bar is drawn only on a terminal; its ``write`` lines (one per point) always go to
    stderr, so a log file gets plain lines, not carriage-return redraws.

    Args:
      total: Points to run.
      enabled: ``progress`` (False: lines only).

    Returns:
      A tqdm bar; ``bar.update(1)`` per point.
    """
    return tqdm(total=total, desc="attack", unit="point", file=sys.stderr, dynamic_ncols=True,
                disable=not (enabled and sys.stderr.isatty()))  # fmt: skip


def save_attacked(
    workdir: Path, rec: dict[str, Any], params: PyTree, state: PyTree, source: dict | None
) -> Path:
    """Saves an attacked model to ``<workdir>/attacked/<scheme>/<kind>/<strength>/``.

    Args:
      workdir: The attack run directory.
      rec: The point's record (its ``scheme``, ``attack`` and ``strength`` name the directory).
      params, state: The attacked model.
      source: The fingerprint of the model that was attacked (its ``meta.json``), or None.

    Returns:
      The directory, loadable with :func:`jaxwm.engine.checkpoint.load_model`.
    """
    out = workdir / "attacked" / rec["scheme"] / rec["attack"] / f"{rec['strength']:g}"
    meta = {"kind": rec["attack"], "strength": rec["strength"], "unit": rec["unit"],
            "scheme": rec["scheme"], "source_fingerprint": source,
            "clean_accuracy": rec["clean_accuracy"], "retention": rec["retention"]}  # fmt: skip
    checkpoint.save_model(out, params, state, meta)
    return out


def _record(ctx, attack, scheme, strength, acc, v, ref, extra) -> dict[str, Any]:
    drop = ref["clean_accuracy"] - acc
    return {
        "attack": attack, "scheme": scheme, "strength": strength,
        "unit": attack_registry.get(attack).unit, "clean_accuracy": acc, "accuracy_drop": drop,
        "retention": v.retention, "k": v.k, "n": v.n, "p_value": v.p_value,
        "log10_p_value": v.log10_p_value, "owned": bool(v.owned),
        # Nothing to remove when the unattacked model was not owned in the first place.
        "control_rate": v.control_rate, "decided_by": v.decided_by,
        "success": ref["owned"] and wrt_success(v.owned, acc, ref["clean_accuracy"],
                                                ctx.cfg.attack.max_acc_drop),
        **extra,
    }  # fmt: skip


def _null_retention(ctx: AttackContext, run_dir: Path, like: PyTree) -> float:
    """Retention of an independent model; other architectures get their own predict function."""
    n_model, p, s, meta = runs.load_model_for(run_dir)
    if jax.tree.structure(p) == jax.tree.structure(like):
        return verify.retention(ctx.labels_on(p, s), ctx.trig.labels)
    norm = meta["normalization"]
    predict = train.make_predict(n_model.apply, norm["mean"], norm["std"])
    pred = verify.predict_labels(lambda x: predict(p, s, x), ctx.trig.images)
    return verify.retention(pred, ctx.trig.labels)


def _load_source(cfg: ml_collections.ConfigDict) -> tuple[Path, dict, Path]:
    """Checks ``attack.source`` and returns it, the owner's manifest and the victim's directory."""
    if not cfg.attack.source:
        raise ConfigError(
            "mode=attack needs attack.source: the run directory of a finished pipeline "
            "(run launch.py with mode=pipeline first; it writes victim/, partitioned/, baseline/ "
            "and watermark/manifest0.json)"
        )
    src = Path(cfg.attack.source)
    manifest_path = src / "watermark" / "manifest0.json"
    if not manifest_path.is_file():
        raise ConfigError(
            f"attack.source={str(src)!r} is not a finished pipeline run: no {manifest_path}"
        )
    missing = [s for s in cfg.attack.schemes if not (src / s / "model").is_dir()]
    if missing:
        raise ConfigError(
            f"attack.source={str(src)!r} has no model for scheme(s) {missing}; set "
            "attack.schemes to the methods that pipeline.methods embedded"
        )
    provenance.check_pipeline_source(src, cfg.attack.schemes)  # models + manifests of one run
    _, _, meta = checkpoint.load_model(src / cfg.attack.schemes[0])
    victim = meta["config"].get("pipeline", {}).get("victim") or str(src / "victim")
    return src, read_manifest(manifest_path), Path(victim)


def run_attack(cfg: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Mode ``attack``: every attack in ``attack.kinds`` against every scheme, at every strength.

    Args:
      cfg: Validated config; ``attack.source`` names the pipeline run directory.
      workdir: Output directory.

    Returns:
      The dict written to ``attacks.json``.
    """
    t0 = time.perf_counter()
    src, manifest, victim_dir = _load_source(cfg)
    attack_store.bind(cfg, workdir, src)  # before reading records made with other fields
    ds = experiments.load_data(cfg)
    model, v_params, v_state, v_meta = runs.load_model_for(victim_dir, ds.num_classes)
    saved = v_meta["dataset"].get("source")
    if saved and saved != cfg.data.source:
        raise ConfigError(
            f"data.source={cfg.data.source!r} but the pipeline in {src} used {saved!r}; "
            "run the attack with the pipeline's config (only mode and attack.* should differ)"
        )
    images, labels = runs.trigger_sources(cfg, ds) if manifest["kind"] != "noise" else (None, None)
    key = config.secret(cfg)
    trig = regenerate(manifest, secret=key, source_images=images, source_labels=labels)
    ctl = controls.control_sets(trig.params, key, source_images=images,
                                count=controls.control_count(trig.kind, cfg.verify.alpha),
                                source_labels=labels)  # fmt: skip
    a = cfg.attack
    x_att, y_att, x_eval, y_eval, split = attacker_data(ds, a.data_split, a.data_fraction, cfg.seed,
                                                      a.eval_images)  # fmt: skip
    mean, std = (tuple(v_meta["normalization"][k]) for k in ("mean", "std"))
    ctx = AttackContext(
        cfg, model, mean, std, x_att, y_att, x_eval, y_eval, trig, int(manifest["num_classes"]),
        [], train.make_eval(model.apply, mean, std), train.make_predict(model.apply, mean, std),
        runs.embed_settings(cfg), [c.images for c in ctl] or None, [c.labels for c in ctl] or None,
    )  # fmt: skip

    # Independent (non-watermarked) models: the victim, pipeline nulls, and verify.nulls.
    null_dirs = sorted(p.parent for p in src.glob("null*/model")) + list(cfg.verify.nulls)
    ctx.nulls.append(verify.retention(ctx.labels_on(v_params, v_state), trig.labels))
    for d in null_dirs:
        ctx.nulls.append(_null_retention(ctx, d, v_params))
    null_thr = verify.null_threshold(ctx.nulls, cfg.verify.fpr, cfg.verify.confidence).threshold
    threshold = decision_threshold(len(trig), ctx.num_classes, cfg.verify.alpha, null_thr,
                                   triggers.chance_level(trig.params))  # fmt: skip
    v_acc, v_verdict = ctx.measure(v_params, v_state)
    _say(f"attack: {len(y_att)} attacker ({a.data_split} split) / {len(y_eval)} evaluation "
         f"(test split) images; "
         f"victim acc {v_acc:.3f} retention {v_verdict.retention:.3f}; ownership needs "
         f"retention >= {threshold:.3f} and the control test (nulls "
         f"{[round(x, 3) for x in ctx.nulls]})")  # fmt: skip

    store = workdir / attack_store.FILE
    done = {attack_store.key(r): r for r in attack_store.read(store)}
    kinds = list(dict.fromkeys(cfg.attack.kinds))  # a repeated kind would duplicate records
    plan = [(s, k, attack_registry.strengths(attack_registry.get(k), cfg))
            for s in cfg.attack.schemes for k in kinds]  # fmt: skip
    todo = sum(1 for s, k, xs in plan for x in xs if (s, k, float(x)) not in done)
    if done:
        _say(f"attack: resuming from {store}: {len(done)} points recorded, {todo} to run")
    reference, timings = {}, {}
    bar = progress_bar(todo, cfg.progress)
    base_key = jax.random.key(cfg.seed)
    for scheme in cfg.attack.schemes:
        params, state, _ = checkpoint.load_model(src / scheme)
        if jax.tree.structure(params) != jax.tree.structure(v_params):
            raise ConfigError(f"{src / scheme} is not the victim's architecture")
        acc, v = ctx.measure(params, state)
        reference[scheme] = {"clean_accuracy": acc, **v.to_dict()}
        if not v.owned:
            _say(f"warning: the unattacked {scheme} model is not owned ({v.reason}); no attack "
                 "on it can count as a success")  # fmt: skip
        source_fp = fingerprint.model_record(src / scheme)
        for i, kind in enumerate(kinds):
            t1 = time.perf_counter()
            entry = attack_registry.get(kind)
            every = attack_registry.strengths(entry, cfg)
            # Only the missing strengths: a point's model does not depend on the others.
            missing = [x for x in every if (scheme, kind, float(x)) not in done]
            # The same key for both schemes: paired comparisons (same data order and noise).
            key = jax.random.fold_in(base_key, attack_registry.NAMES.index(kind))
            points = entry.points(ctx, params, state, key, missing) if missing else ()
            for strength, p, s, extra in points:
                acc_k, v_k = ctx.measure(p, s)
                rec = _record(ctx, kind, scheme, strength, acc_k, v_k, reference[scheme], extra)
                if cfg.attack.save_models:
                    save_attacked(workdir, rec, p, s, source_fp)
                attack_store.append(store, rec)  # after the model: a record means it is saved
                done[attack_store.key(rec)] = json.loads(
                    json.dumps(rec, sort_keys=True, default=float)
                )
                bar.update(1)
                bar.write(f"[{scheme}] {kind} {strength:g} {entry.unit}: acc {acc_k:.3f} "
                          f"retention {v_k.retention:.2f} {'owned' if v_k.owned else 'NOT owned'}"
                          f" ({time.perf_counter() - t1:.1f} s into {kind}, "
                          f"{time.perf_counter() - t0:.0f} s total)", file=sys.stderr)  # fmt: skip
            got = [done[(scheme, kind, float(x))] for x in every]
            timings[f"{kind}/{scheme}"] = time.perf_counter() - t1
            bar.write(f"[{scheme} {i + 1}/{len(kinds)}] {kind}: {len(missing)} points in "
                      f"{timings[f'{kind}/{scheme}']:.1f} s"
                      + (f" ({len(every) - len(missing)} recorded earlier)"
                         if len(missing) < len(every) else "")
                      + "; retention "
                      + " ".join(f"{r['strength']:g}:{r['retention']:.2f}" for r in got),
                      file=sys.stderr)  # fmt: skip
    bar.close()
    # In plan order, from the store: a resumed run writes what an uninterrupted one does.
    records = [done[(s, k, float(x))] for s, k, xs in plan for x in xs]

    rows = summarize(records)
    out = {
        "source": str(src), "dataset": ds.name, "num_classes": ctx.num_classes,
        "model": model.name, "trigger": {k: manifest[k] for k in ("kind", "size", "commitment")},
        "split": split,
        "victim": {"clean_accuracy": v_acc, **v_verdict.to_dict()},
        "null_retentions": ctx.nulls, "null_threshold": null_thr,
        "decision_threshold": threshold, "chance": 1.0 / ctx.num_classes,
        "max_acc_drop": cfg.attack.max_acc_drop, "strength_units": {k.name: k.unit for k in attack_registry.KINDS},
        "reference": reference, "records": records, "summary": rows, "timings_s": timings,
        "environment": experiments.environment(), "wall_s": time.perf_counter() - t0,
    }  # fmt: skip
    experiments.write_json(workdir / "attacks.json", out)
    with open(workdir / "attacks.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_FIELDS, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
    table = summary_table(rows)
    head = (f"Attacks on {src} ({ds.name}, {model.name}): owned when every test of the "
            f"verifier rejects at alpha={cfg.verify.alpha:g} (retention >= {100 * threshold:.1f}% "
            f"and above the suspect's rate on fresh-key control triggers; chance "
            f"{100 / ctx.num_classes:.1f}%); the owner's digest is assumed published before "
            "release. WRT success = not "
            f"owned with at most {100 * cfg.attack.max_acc_drop:g} points of accuracy lost.\n"
            f"Unattacked: " + ", ".join(f"{k} acc {100 * r['clean_accuracy']:.1f}% ret "
                                        f"{100 * r['retention']:.1f}%" for k, r in reference.items())
            + f"; wall {out['wall_s']:.0f} s.\n\n")  # fmt: skip
    (workdir / "attacks.md").write_text(head + table)
    print(head + table, end="")
    if cfg.attack.plots:
        out["plots"] = [str(p) for p in plots.plot_all(out, workdir, cfg.attack.figure_widths)]
        experiments.write_json(workdir / "attacks.json", out)
        _say("plots: " + ", ".join(out["plots"]))
    return out
