"""Mode ``reproduce``: the whole study in one command, summarised in ``REPORT.md``.

For every entry of ``reproduce.runs`` (a dataset preset and its data source) and every seed of
``reproduce.seeds`` it runs the pipeline (victim -> partitioned and baseline embedding ->
verification) and the attack suite, then aggregates over seeds (mean ± std, n stated) into
``REPORT.md``: Table 1 beside the paper's figures, the attack table, links to the Figure 2/3
analogues, the hardware, versions and wall time. Entries whose data is unavailable (e.g.
CIFAR-100 offline) are reported as skipped, not silently dropped.

Entries are ``NAME=SOURCE``. With ``reproduce.presets`` (default) NAME is a preset (``mnist``,
``cifar10``, ``cifar100``; see :func:`jaxwm.runner.config.preset`) that sets model, training and
embedding; otherwise every entry uses this config's own fields and NAME is only the label (the
paper's figures are matched by it), which is how the tests and CPU-sized studies run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections

from jaxwm.engine import compile_stats
from jaxwm.engine.sweep import aggregate, format_stat
from jaxwm.errors import ConfigError, DatasetError
from jaxwm.runner import attack_runs, config, experiments, fingerprint, plots, procpool, runs


def _entry_config(cfg: ml_collections.ConfigDict, entry: str, seed: int) -> tuple[str, Any]:
    name, sep, source = entry.partition("=")
    if not sep or not source:
        raise ConfigError(
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
        sub.restart = cfg.restart  # a preset starts from defaults: restart must travel too
    sub.data.source = source
    sub.data.cache_dir = cfg.data.cache_dir
    sub.compile_cache, sub.compile_cache_min_s = cfg.compile_cache, cfg.compile_cache_min_s
    sub.seed = seed
    return name, sub


def _run_unit(sub: ml_collections.ConfigDict, run_dir: Path, attacks: bool) -> dict[str, Any]:
    """One (entry, seed): pipeline, then the attack suite; ``{"skipped": why}`` without data."""
    try:
        sub.mode = "pipeline"
        config.validate(sub)
        fingerprint.bind_pipeline(sub, run_dir)  # as mode=pipeline binds its workdir
        res = runs.run_pipeline(sub, run_dir)
    except DatasetError as e:  # e.g. CIFAR-100 with no offline copy
        return {"skipped": str(e).splitlines()[0]}
    atk = None
    if attacks:
        sub.mode = "attack"
        sub.attack.source = str(run_dir)
        (run_dir / "attack").mkdir(parents=True, exist_ok=True)
        atk = attack_runs.run_attack(sub, run_dir / "attack")
    return {"pipeline": res, "attack": atk}


def _slots(cfg: ml_collections.ConfigDict) -> tuple[int, bool]:
    """(concurrent unit processes, pin each to one GPU); (1, False) runs in this process."""
    n, backend = cfg.reproduce.processes, jax.default_backend()
    if n == 1:
        return 1, False
    if backend not in ("gpu", "cpu"):
        raise ConfigError(
            f"reproduce.processes={n} runs one process per GPU; on {backend} set it to 1"
        )
    return (n or jax.local_device_count()), backend == "gpu"


def _run_units_in_processes(units, cfg, slots: int, pin_gpus: bool) -> list[dict[str, Any]]:
    """Runs each unit as ``python -m jaxwm.runner.report --unit ...``; returns their unit.json."""
    jobs = []
    for label, seed, sub, run_dir in units:
        run_dir.mkdir(parents=True, exist_ok=True)
        public = ml_collections.ConfigDict(sub.to_dict())
        public.watermark.secret = ""  # the secret travels in the environment, never on disk
        (run_dir / "unit_config.json").write_text(json.dumps(public.to_dict(), indent=2))
        argv = [sys.executable, "-m", "jaxwm.runner.report", "--unit", str(run_dir / "unit_config.json"),
                "--run-dir", str(run_dir)] + ([] if cfg.reproduce.attacks else ["--no-attacks"])  # fmt: skip
        jobs.append(procpool.Job(f"{label} seed {seed}", argv, run_dir / "log.txt"))
    env = dict(os.environ, **{config.SECRET_ENV: config.secret(cfg)})
    procpool.run_jobs(jobs, slots, pin_gpus=pin_gpus, env=env)
    return [json.loads((run_dir / "unit.json").read_text()) for *_, run_dir in units]


def run_reproduce(cfg: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Runs pipeline + attacks per (entry, seed) and writes ``REPORT.md``.

    With ``reproduce.processes`` != 1 each (entry, seed) runs in its own process, at most that
    many at once (0 = one per local device), each pinned to one GPU (:mod:`jaxwm.runner.procpool`).
    """
    t0 = time.perf_counter()
    config.secret(cfg)
    studies: dict[str, dict[str, Any]] = {}
    units = []
    for entry in cfg.reproduce.runs:
        label = entry.partition("=")[0]
        studies.setdefault(label, {"entry": entry, "seeds": [], "skipped": None})
        for seed in cfg.reproduce.seeds:
            _, sub = _entry_config(cfg, entry, seed)
            units.append((label, seed, sub, workdir / label / f"seed{seed}"))
    slots, pin_gpus = _slots(cfg)
    if slots > 1:
        print(f"running {len(units)} (dataset, seed) units as separate processes, {slots} at "
              f"a time{' (one GPU each)' if pin_gpus else ''}", file=sys.stderr, flush=True)  # fmt: skip
        outcomes = _run_units_in_processes(units, cfg, slots, pin_gpus)
    else:
        outcomes = []
        for label, seed, sub, run_dir in units:
            if studies[label]["skipped"]:  # its data is missing: the other seeds would be too
                outcomes.append({"skipped": studies[label]["skipped"]})
                continue
            print(f"=== {label} seed {seed}: {run_dir}", file=sys.stderr, flush=True)
            # The unit's own Table 1 and attack table go to the console's stderr (and log.txt):
            # stdout carries one report, REPORT.md, as with processes > 1.
            with contextlib.redirect_stdout(sys.stderr):
                outcomes.append(_run_unit(sub, run_dir, cfg.reproduce.attacks))
            studies[label]["skipped"] = outcomes[-1].get("skipped")
    for (label, seed, _, run_dir), out in zip(units, outcomes, strict=True):
        if "skipped" in out:
            studies[label]["skipped"] = out["skipped"]
        else:
            studies[label]["seeds"].append({"seed": seed, **out, "dir": str(run_dir)})
    for label, study in studies.items():
        if study["skipped"]:  # reported as skipped, not silently dropped
            study["seeds"] = []
            print(f"skipping {label}: {study['skipped']}", file=sys.stderr)
    figures: dict[str, list[str]] = {}
    if cfg.reproduce.attacks and cfg.attack.plots:  # pooled over seeds: mean ± std bands
        pooled = {k: [s["attack"] for s in v["seeds"] if s["attack"]] for k, v in studies.items()}
        made = plots.plot_studies(pooled, workdir, cfg.attack.figure_widths)
        figures = {k: [str(p.relative_to(workdir)) for p in v] for k, v in made.items()}
    wall = time.perf_counter() - t0
    report = render(studies, cfg, wall, figures)
    (workdir / "REPORT.md").write_text(report)
    summary = {"studies": {k: _table_row(v) for k, v in studies.items()}, "wall_s": wall,
               "processes": slots, "environment": experiments.environment()}  # fmt: skip
    experiments.write_json(workdir / "report.json", summary)
    print(report)
    return summary


def _unit_main(argv: list[str] | None = None) -> None:
    """Entry point of one unit process: ``python -m jaxwm.runner.report --unit CFG.json --run-dir D``."""
    p = argparse.ArgumentParser(description="one (dataset, seed) unit of mode reproduce")
    p.add_argument("--unit", required=True, help="the unit's config as JSON (no secret)")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--no-attacks", action="store_true")
    args = p.parse_args(argv)
    sub = config.from_dict(json.loads(Path(args.unit).read_text()))
    if sub.compile_cache:
        compile_stats.enable_persistent_cache(sub.compile_cache, sub.compile_cache_min_s)
    run_dir = Path(args.run_dir)
    t0 = time.perf_counter()
    with compile_stats.CompileStats() as stats:
        out = _run_unit(sub, run_dir, not args.no_attacks)
    experiments.write_json(run_dir / "compile_stats.json", stats.as_dict())
    experiments.write_json(run_dir / "unit.json", {**out, "wall_s": time.perf_counter() - t0})


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


def render(
    studies: dict[str, dict[str, Any]],
    cfg: ml_collections.ConfigDict,
    wall: float,
    figures: dict[str, list[str]] | None = None,
) -> str:
    """The markdown report; ``figures``: label (``""``: across datasets) -> files, relative."""
    figures = figures or {}
    env = experiments.environment()
    lines = [
        "# jaxwm reproduction report",
        "",
        "Lyu & Xian 2026, partitioned watermarking, reproduced with jaxwm.",
        f"Seeds {tuple(cfg.reproduce.seeds)}; device {env['device']} x{env['device_count']}; "
        f"jax {env['jax']}, flax {env['flax']}, optax {env['optax']}, Python {env['python']}; "
        f"wall {wall:.0f} s"
        + (
            f"; each (dataset, seed) in its own process, up to {cfg.reproduce.processes or 'one per device'} at once."
            if cfg.reproduce.processes != 1
            else "."
        ),
        "",
        "## Table 1: clean accuracy % on the full test split / watermark retention % (mean ± std over seeds)",
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
        "Ownership (every test of the verifier rejects at verify.alpha: control, permutation, null threshold), seeds owned / n:",
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
        pooled = [f for f in figures.get(label, []) if f.endswith(".png")]
        if pooled:
            lines.append(f"Figures, mean ± std over {len(study['seeds'])} seed(s) (a PDF beside "
                         "each PNG; `_single`: one-column width):")  # fmt: skip
            lines += [f"- [{Path(f).name}]({f})" for f in pooled if "_single" not in f]
        lines.append("")
    across = [f for f in figures.get("", []) if f.endswith(".png") and "_single" not in f]
    if across:
        lines += ["## Figures 2 and 3 across datasets (FTAL; activation-frequency pruning)", ""]
        lines += [f"- [{f}]({f})" for f in across] + [""]
    return "\n".join(lines) + "\n"


def load_report(path: str | Path) -> dict[str, Any]:
    """Reads ``report.json`` written by :func:`run_reproduce`."""
    return json.loads(Path(path).read_text())


if __name__ == "__main__":
    _unit_main()
