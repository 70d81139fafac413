"""Mode ``attack``: sweep watermark-removal attacks over a finished pipeline run.

Reads ``attack.source`` (a ``pipeline`` run directory: ``victim/``, ``partitioned/``,
``baseline/``, ``watermark/manifest0.json``), regenerates the owner's trigger set from the secret,
and attacks each watermarked model with every kind in ``attack.kinds`` at every strength. The
attacker's data is a held-out share (``attack.data_fraction``) of the *test* set; clean accuracy
is measured on the rest, so attacker data never overlaps evaluation data.

Each point is verified as the owner would (:func:`jaxwm.verify.verify_predictions`: the control
test against fresh-key triggers, the permutation test, and the null threshold fitted on the
victim and any other independent models; at ``verify.alpha``, i.e. assuming the owner published
the digest before release) and scored by the Watermark-Robustness-Toolbox criterion (Lukas et
al. 2022): an attack *succeeds* when ownership can no longer be shown while clean accuracy fell
by at most ``attack.max_acc_drop`` against the unattacked watermarked model. Writes
``attacks.json``, ``attacks.csv``, ``attacks.md`` and the plots of :mod:`jaxwm.runner.plots` to
the run directory. The attacks themselves (functions, units, strengths fields) are the entries
of :mod:`jaxwm.runner.attack_registry`.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxwm import controls, triggers, verify
from jaxwm.engine import checkpoint, train
from jaxwm.errors import ConfigError
from jaxwm.manifest import read_manifest, regenerate
from jaxwm.runner import attack_registry, config, experiments, plots, provenance, runs
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
    att_idx, eval_idx = split_attacker(len(ds.test_labels), cfg.attack.data_fraction, cfg.seed)
    mean, std = (tuple(v_meta["normalization"][k]) for k in ("mean", "std"))
    ctx = AttackContext(
        cfg, model, mean, std, ds.test_images[att_idx], ds.test_labels[att_idx],
        ds.test_images[eval_idx], ds.test_labels[eval_idx], trig, int(manifest["num_classes"]),
        [], train.make_eval(model.apply, mean, std), train.make_predict(model.apply, mean, std),
        runs.embed_settings(cfg), np.concatenate([c.images for c in ctl]) if ctl else None,
        np.concatenate([c.labels for c in ctl]) if ctl else None,
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
    _say(f"attack: {len(att_idx)} attacker / {len(eval_idx)} evaluation test images; "
         f"victim acc {v_acc:.3f} retention {v_verdict.retention:.3f}; ownership needs "
         f"retention >= {threshold:.3f} and the control test (nulls "
         f"{[round(x, 3) for x in ctx.nulls]})")  # fmt: skip

    reference, records, timings = {}, [], {}
    kinds = list(dict.fromkeys(cfg.attack.kinds))  # a repeated kind would duplicate records
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
        for i, kind in enumerate(kinds):
            t1 = time.perf_counter()
            entry = attack_registry.get(kind)
            # The same key for both schemes: paired comparisons (same data order and noise).
            key = jax.random.fold_in(base_key, attack_registry.NAMES.index(kind))
            got = []
            points = entry.points(ctx, params, state, key, attack_registry.strengths(entry, cfg))
            for strength, p, s, extra in points:
                acc_k, v_k = ctx.measure(p, s)
                got.append(_record(ctx, kind, scheme, strength, acc_k, v_k, reference[scheme],
                                   extra))  # fmt: skip
            records += got
            timings[f"{kind}/{scheme}"] = time.perf_counter() - t1
            _say(f"[{scheme} {i + 1}/{len(kinds)}] {kind}: {len(got)} points in "
                 f"{timings[f'{kind}/{scheme}']:.1f} s; retention "
                 + " ".join(f"{r['strength']:g}:{r['retention']:.2f}" for r in got))  # fmt: skip

    rows = summarize(records)
    out = {
        "source": str(src), "dataset": ds.name, "num_classes": ctx.num_classes,
        "model": model.name, "trigger": {k: manifest[k] for k in ("kind", "size", "commitment")},
        "split": {"fraction": cfg.attack.data_fraction, "attacker": len(att_idx),
                  "eval": len(eval_idx), "attacker_indices": att_idx.tolist()},
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
