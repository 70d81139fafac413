"""Mode ``reproduce``: the whole study in one command, summarised in ``REPORT.md``.

For every entry of ``reproduce.runs`` (a dataset preset and its data source) and every seed of
``reproduce.seeds`` it runs the pipeline (victim -> partitioned and baseline embedding ->
verification) and the attack suite, then aggregates over seeds (mean ± std, n stated) into
``REPORT.md``: Table 1 beside the paper's figures, the attack table, links to the Figure 2/3
analogues, the hardware, versions and wall time. Entries whose data is unavailable (e.g.
CIFAR-100 offline) are reported as skipped, not silently dropped.

Entries are ``NAME=SOURCE``. With ``reproduce.presets`` (default) NAME is a preset (``mnist``,
``cifar10``, ``cifar100``; see :func:`jaxwm.config.preset`) that sets model, training and
embedding; otherwise every entry uses this config's own fields and NAME is only the label (the
paper's figures are matched by it), which is how the tests and CPU-sized studies run.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import ml_collections

from jaxwm import attack_runs, config, data, experiments, runs
from jaxwm.sweep import aggregate, format_stat


def _entry_config(cfg: ml_collections.ConfigDict, entry: str, seed: int) -> tuple[str, Any]:
    name, sep, source = entry.partition("=")
    if not sep or not source:
        raise config.ConfigError(
            f"reproduce.runs entry {entry!r} must be NAME=SOURCE, e.g. 'mnist=folder:data/mnist.tar.gz'"
        )
    if not cfg.reproduce.presets:
        sub = ml_collections.ConfigDict(cfg.to_dict())
    else:
        sub = config.preset(name)
        sub.watermark.secret = cfg.watermark.secret
        sub.attack = ml_collections.ConfigDict(cfg.attack.to_dict())
        sub.attack.source = ""
        sub.verify.null_models = cfg.verify.null_models
        sub.progress = cfg.progress
    sub.data.source = source
    sub.data.cache_dir = cfg.data.cache_dir
    sub.seed = seed
    return name, sub


def run_reproduce(cfg: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Runs pipeline + attacks per (entry, seed) and writes ``REPORT.md``."""
    t0 = time.perf_counter()
    config.secret(cfg)
    studies: dict[str, dict[str, Any]] = {}
    for entry in cfg.reproduce.runs:
        label = entry.partition("=")[0]
        study = studies.setdefault(label, {"entry": entry, "seeds": [], "skipped": None})
        for seed in cfg.reproduce.seeds:
            name, sub = _entry_config(cfg, entry, seed)
            run_dir = workdir / label / f"seed{seed}"
            print(f"=== {label} seed {seed}: {run_dir}", file=sys.stderr, flush=True)
            try:
                sub.mode = "pipeline"
                config.validate(sub)
                res = runs.run_pipeline(sub, run_dir)
            except data.DatasetError as e:  # e.g. CIFAR-100 with no offline copy
                study["skipped"] = str(e).splitlines()[0]
                print(f"skipping {label}: {study['skipped']}", file=sys.stderr)
                break
            atk = None
            if cfg.reproduce.attacks:
                sub.mode = "attack"
                sub.attack.source = str(run_dir)
                (run_dir / "attack").mkdir(parents=True, exist_ok=True)
                atk = attack_runs.run_attack(sub, run_dir / "attack")
            study["seeds"].append(
                {"seed": seed, "pipeline": res, "attack": atk, "dir": str(run_dir)}
            )
    wall = time.perf_counter() - t0
    report = render(studies, cfg, wall)
    (workdir / "REPORT.md").write_text(report)
    summary = {"studies": {k: _table_row(v) for k, v in studies.items()}, "wall_s": wall,
               "environment": experiments.environment()}  # fmt: skip
    experiments.write_json(workdir / "report.json", summary)
    print(report)
    return summary


def _table_row(study: dict[str, Any]) -> dict[str, Any]:
    seeds = study["seeds"]
    if not seeds:
        return {"skipped": study["skipped"]}
    row: dict[str, Any] = {
        "victim_acc": aggregate([s["pipeline"]["victim"]["test_accuracy"] for s in seeds])
    }
    for method in seeds[0]["pipeline"]["methods"]:
        ms = [s["pipeline"]["methods"][method] for s in seeds]
        row[f"{method}_acc"] = aggregate([m["test_accuracy"] for m in ms])
        row[f"{method}_retention"] = aggregate([m["sets"][0]["retention"] for m in ms])
        row[f"{method}_owned"] = sum(bool(m["sets"][0]["owned"]) for m in ms)
    row["victim_owned"] = sum(bool(s["pipeline"]["victim"]["sets"][0]["owned"]) for s in seeds)
    row["n"] = len(seeds)
    return row


def _pct(stat: dict[str, Any]) -> str:
    if stat["n"] == 1:  # no spread from a single run
        return f"{100 * stat['mean']:.2f} (n=1)"
    return format_stat({k: (100 * v if k in ("mean", "std") else v) for k, v in stat.items()}, 2)


def render(studies: dict[str, dict[str, Any]], cfg: ml_collections.ConfigDict, wall: float) -> str:
    """The markdown report."""
    env = experiments.environment()
    lines = [
        "# jaxwm reproduction report",
        "",
        "Lyu & Xian 2026, partitioned watermarking, reproduced with jaxwm.",
        f"Seeds {tuple(cfg.reproduce.seeds)}; device {env['device']} x{env['device_count']}; "
        f"jax {env['jax']}, flax {env['flax']}, optax {env['optax']}, Python {env['python']}; "
        f"wall {wall:.0f} s.",
        "",
        "## Table 1: clean accuracy % / watermark retention % (mean ± std over seeds)",
        "",
        "| dataset | n | victim acc | partitioned acc | partitioned ret | baseline acc | baseline ret "
        "| paper victim | paper partitioned | paper baseline |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, study in studies.items():
        row = _table_row(study)
        paper = runs.PAPER_TABLE1.get(label)
        ref = (
            ("—", "—", "—") if paper is None else (
                f"{paper['victim']:.2f}",
                "{:.2f} / {:.2f}".format(*paper["partitioned"]),
                "{:.2f} / {:.2f}".format(*paper["baseline"]),
            )
        )  # fmt: skip
        if "skipped" in row:
            lines.append(f"| {label} | 0 | skipped: {row['skipped']} | | | | | {' | '.join(ref)} |")
            continue
        cells = [_pct(row["victim_acc"])]
        for method in ("partitioned", "baseline"):
            for what in ("acc", "retention"):
                key = f"{method}_{what}"
                cells.append(_pct(row[key]) if key in row else "—")
        lines.append(f"| {label} | {row['n']} | {' | '.join(cells)} | {' | '.join(ref)} |")
    lines += [
        "",
        "Ownership (p < alpha and retention above the null threshold), seeds owned / n:",
        "",
    ]
    for label, study in studies.items():
        row = _table_row(study)
        if "n" in row:
            owned = ", ".join(f"{m} {row[f'{m}_owned']}/{row['n']}" for m in ("partitioned", "baseline")
                              if f"{m}_owned" in row)  # fmt: skip
            lines.append(
                f"- {label}: victim {row['victim_owned']}/{row['n']} (false positives), {owned}"
            )
    lines += ["", "## Attacks (first seed; full records in each run's attack/attacks.json)", ""]
    for label, study in studies.items():
        first = study["seeds"][0] if study["seeds"] else None
        if not first or not first["attack"]:
            continue
        lines += [f"### {label}", "", attack_runs.summary_table(first["attack"]["summary"]), ""]
        rel = Path(first["dir"]).name
        for png in ("fig2_finetune.png", "fig3_pruning.png", "attacks_scatter.png"):
            lines.append(f"- [{png}]({label}/{rel}/attack/{png})")
        lines.append("")
    return "\n".join(lines) + "\n"


def load_report(path: str | Path) -> dict[str, Any]:
    """Reads ``report.json`` written by :func:`run_reproduce`."""
    return json.loads(Path(path).read_text())
