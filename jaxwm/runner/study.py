"""Mode ``study``: the deciding study of claims C1-C4, as one resumable command.

A *cell* is a name and a few dotted overrides of the run's config (``study.cells``, e.g.
``"mixed_2: embed.clean_per_trigger=2"``). Every cell runs at every victim seed
(``study.seeds``) and every watermark key (``study.keys``): one *unit* per (cell, seed, key).
A unit is the ``pipeline`` of :mod:`jaxwm.runner.runs` (both methods embedded from the same
victim with the same key, so partitioned and baseline are paired) followed, when the
partitioned model kept its accuracy (``study.attack_max_drop``) and the cell is one of
``study.attack_cells``, by mode ``attack`` of :mod:`jaxwm.runner.attack_runs` with
``study.attack_kinds`` (the same attack key for both).

Victims are trained once per seed in ``<workdir>/victims/<train fingerprint>-s<seed>`` and reused
by every cell whose train fields are the same (a cell that changes ``train.*`` or ``model.*``
gets its own victim, bound by :mod:`jaxwm.runner.fingerprint` like any training run).
Watermark key ``k`` is a 256-bit key derived from the owner's secret and ``k``, so the keys are
independent draws that the owner can regenerate. Each finished unit is appended at once to
``<workdir>/units.jsonl`` with the fingerprint of the fields that shaped it; a rerun skips the
units whose line has the same fingerprint. :mod:`jaxwm.runner.study_report` then writes
``STUDY.md``, ``study.json`` and the plots.

With ``study.workers`` = N > 1 this process first trains every victim the units to run need,
then runs those units in N worker processes (:mod:`jaxwm.runner.study_pool`), each unit's
output in its own ``log.txt``; this process alone appends to ``units.jsonl`` and prints the
progress lines. The records are the same as with one process, and the worker count is not in a
unit's fingerprint, so a rerun with another count reuses the finished units.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_collections

from jaxwm.errors import ConfigError, JobError
from jaxwm.runner import (
    attack_runs,
    config,
    experiments,
    fingerprint,
    logfile,
    preflight,
    runs,
    study_pool,
    study_report,
)
from jaxwm.runner.config_fields import FROM_POINT

UNITS_FILE = "units.jsonl"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_cells(cells: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
    """Parses ``study.cells`` into ``(name, {dotted field: value})`` pairs.

    Args:
      cells: Strings ``"NAME: field=value; field=value"``; values are Python literals (a bare
        word is a string), an empty override list keeps the config as it is.

    Returns:
      The cells in order.

    Raises:
      ConfigError: a malformed cell, a repeated name, or a name unfit for a directory.

    Example:
        >>> parse_cells(("mixed_2: embed.clean_per_trigger=2; watermark.kind='noise'",))
        [('mixed_2', {'embed.clean_per_trigger': 2, 'watermark.kind': 'noise'})]
    """
    out: list[tuple[str, dict[str, Any]]] = []
    for cell in cells:
        name, _, rest = cell.partition(":")
        name = name.strip()
        if not _NAME.match(name) or name in {n for n, _ in out}:
            raise ConfigError(
                f"study.cells: cell {cell!r} needs a unique NAME of letters, digits, '_', '.' or "
                "'-' before the ':' (e.g. 'mixed_2: embed.clean_per_trigger=2')"
            )
        overrides: dict[str, Any] = {}
        for item in filter(None, (x.strip() for x in rest.split(";"))):
            field, eq, text = item.partition("=")
            if not eq or not field.strip():
                raise ConfigError(
                    f"study.cells: {item!r} in cell {name!r} is not 'field=value' (separate "
                    "overrides with ';')"
                )
            try:
                value = ast.literal_eval(text.strip())
            except (ValueError, SyntaxError):
                value = text.strip()  # a bare word: a string such as a layer name
            overrides[field.strip()] = value
        out.append((name, overrides))
    return out


def cell_config(
    cfg: ml_collections.ConfigDict, name: str, overrides: dict[str, Any]
) -> ml_collections.ConfigDict:
    """``cfg`` with one cell's overrides applied and checked (mode ``pipeline``).

    Raises:
      ConfigError: an override naming no field of the config, or a value its check refuses
        (the message names the cell).
    """
    sub = ml_collections.ConfigDict(cfg.to_dict())
    sub.mode = "pipeline"
    sub.pipeline.methods = ("partitioned", "baseline")
    sub.pipeline.victim = ""
    if "embed.operating_point" in overrides:
        # The config arrives resolved (validate filled these from its own operating point); a
        # cell naming another point takes that point's values unless it sets them itself.
        sub.embed.clean_per_trigger = sub.embed.target_retention = FROM_POINT
    for field, value in overrides.items():
        section, _, key = field.rpartition(".")
        node = sub
        for part in filter(None, section.split(".")):
            node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
        if not isinstance(node, ml_collections.ConfigDict) or key not in node or field == "mode":
            raise ConfigError(
                f"study.cells: cell {name!r} overrides {field!r}, which is not a config field "
                "(see jaxwm/runner/config_fields.py for the names)"
            )
        default = node[key]
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        node[key] = value
    try:
        config.validate(sub)
    except ConfigError as e:
        raise ConfigError(f"study.cells: cell {name!r}: {e}") from None
    return sub


def attack_cells(names: tuple[str, ...], cells: list[str]) -> set[str]:
    """The cells of ``study.attack_cells`` (``('*',)``: every cell).

    Raises:
      ConfigError: a name that is not one of ``cells``.

    Example:
        >>> sorted(attack_cells(("*",), ["a", "b"]))
        ['a', 'b']
    """
    if "*" in names:
        return set(cells)
    unknown = [n for n in names if n not in cells]
    if unknown:
        raise ConfigError(
            f"study.attack_cells names {', '.join(map(repr, unknown))}, not a cell of study.cells "
            f"({', '.join(cells)}); use ('*',) to attack every cell or () for none"
        )
    return set(names)


def derived_key(secret: str, key: int) -> str:
    """Watermark key number ``key`` of the study: a 256-bit hex key derived from ``secret``."""
    return hashlib.sha256(f"{secret}\0jaxwm-study-key-{key}".encode()).hexdigest()


@contextlib.contextmanager
def _only_key(sub: ml_collections.ConfigDict, key: str) -> Iterator[None]:
    """Runs with ``key`` as the one secret: the config's and ``$JAXWM_SECRET`` must not differ."""
    saved = os.environ.pop(config.SECRET_ENV, None)
    sub.watermark.secret = key
    try:
        yield
    finally:
        if saved is not None:
            os.environ[config.SECRET_ENV] = saved


def _victim(sub: ml_collections.ConfigDict, workdir: Path) -> Path:
    """The victim of ``sub``'s seed and train fields, trained the first time it is needed."""
    rec = fingerprint.record("train", fingerprint.train_fields(sub))
    run_dir = workdir / "victims" / f"{rec['digest'][:8]}-s{sub.seed}"
    if not (run_dir / "model" / "meta.json").is_file():
        _say(f"study: training the victim of seed {sub.seed} in {run_dir}")
        train_cfg = ml_collections.ConfigDict(sub.to_dict())
        train_cfg.mode = "train"
        experiments.run_train(train_cfg, run_dir)  # binds run_dir to the train fingerprint
    return run_dir


def unit_fingerprint(sub: ml_collections.ConfigDict, key: int, attack_kinds: tuple,
                     watermark_key: str) -> str:  # fmt: skip
    """Digest of what shapes a unit's results: its pipeline and attack fields and its key.

    The key enters as a SHA-256 check value (one-way; a 256-bit key cannot be recovered from
    it), so a rerun with another owner's secret redoes the units instead of reusing them.
    """
    fields = fingerprint.pipeline_fields(sub)
    fields.update({f"attack.{k}": v for k, v in sub.attack.items() if k != "source"})
    check = hashlib.sha256(f"jaxwm-study-check\0{watermark_key}".encode()).hexdigest()[:16]
    fields.update({"study.key": key, "study.key_check": check,
                   "study.attack_kinds": list(attack_kinds)})  # fmt: skip
    fields["study.attack_max_drop"] = sub.get("study", {}).get("attack_max_drop")
    return fingerprint.record("study-unit", json.loads(json.dumps(fields, default=str)))["digest"]


def _attack_summary(out: dict[str, Any]) -> dict[str, Any]:
    """The attack points a verdict needs, per kind and scheme, in strength order."""
    keep = ("strength", "clean_accuracy", "accuracy_drop", "retention", "owned", "success")
    res: dict[str, Any] = {"reference": {s: {"clean_accuracy": r["clean_accuracy"],
                                             "owned": r["owned"]}
                                         for s, r in out["reference"].items()}, "points": {}}  # fmt: skip
    for r in out["records"]:
        points = res["points"].setdefault(r["attack"], {}).setdefault(r["scheme"], [])
        points.append({k: r[k] for k in keep})
    return res


def run_unit(sub: ml_collections.ConfigDict, unit_dir: Path, attack_kinds: tuple,
             max_drop: float) -> dict[str, Any]:  # fmt: skip
    """One (cell, seed, key): the pipeline, then the attacks if the partitioned model kept accuracy.

    Args:
      sub: The unit's pipeline config (victim and key already set).
      unit_dir: Its run directory.
      attack_kinds: Attack kinds to run; empty for none.
      max_drop: Largest partitioned accuracy drop against the victim that still gets attacked.

    Returns:
      ``{"victim_accuracy", "methods": {m: {"accuracy", "retention", "owned", "epochs"}},
      "attacks": None or the points of :func:`_attack_summary`}``.
    """
    fingerprint.bind_pipeline(sub, unit_dir)  # restart=True: an unfinished unit starts afresh
    res = runs.run_pipeline(sub, unit_dir)
    methods = {
        m: {"accuracy": r["test_accuracy"], "retention": r["sets"][0]["retention"],
            "owned": bool(r["owned"]), "epochs": len(r["history"][0])}
        for m, r in res["methods"].items()
    }  # fmt: skip
    victim = res["victim"]["test_accuracy"]
    out = {"victim_accuracy": victim, "methods": methods, "attacks": None}
    if attack_kinds and victim - methods["partitioned"]["accuracy"] <= max_drop + 1e-9:
        acfg = ml_collections.ConfigDict(sub.to_dict())
        acfg.mode = "attack"
        acfg.attack.source = str(unit_dir)
        acfg.attack.kinds = tuple(attack_kinds)
        acfg.attack.plots = False  # the study draws its own, with seed bands
        (unit_dir / "attacks").mkdir(exist_ok=True)
        out["attacks"] = _attack_summary(attack_runs.run_attack(acfg, unit_dir / "attacks"))
    return out


def read_units(path: Path) -> list[dict[str, Any]]:
    """The finished units in ``units.jsonl`` (a torn last line from a kill is ignored)."""
    if not path.is_file():
        return []
    units = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            units.append(json.loads(line))
    return units


def _append(path: Path, unit: dict[str, Any]) -> None:
    """Appends ``unit`` to ``units.jsonl`` at once: a killed study keeps every finished unit."""
    torn = path.is_file() and not path.read_bytes().endswith(b"\n") and path.stat().st_size
    with open(path, "a") as f:
        f.write(("\n" if torn else "") + json.dumps(unit) + "\n")  # after a torn line


def _progress(tag: str, unit: dict[str, Any]) -> str:
    """A finished unit's progress line: accuracies, retention, attacked or not, wall time."""
    m = unit["methods"]
    return (f"{tag}: victim {100 * unit['victim_accuracy']:.2f}%, " + ", ".join(
            f"{k} {100 * v['accuracy']:.2f}% / {100 * v['retention']:.0f}% retention"
            for k, v in m.items()) + (", attacked" if unit["attacks"] else ", not attacked")
            + f" ({unit['wall_s']:.0f} s)")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class _Pending:
    """A unit left for the worker processes (``study.workers`` > 1)."""

    tag: str  # its progress line's start, ``[study i/N] cell seed s key k``
    name: str
    seed: int
    key: int
    fingerprint: str
    sub: ml_collections.ConfigDict  # its pipeline config, seed set, victim not yet
    kinds: tuple
    unit_dir: Path


def _run_in_workers(pending: list[_Pending], cfg: ml_collections.ConfigDict, workdir: Path,
                    secret: str) -> None:  # fmt: skip
    """Trains the victims ``pending`` needs, then runs its units in ``study.workers`` processes.

    Raises:
      JobError: a unit failed (after the running ones finished and were appended), naming it.
    """
    # Every victim first, here: two units sharing one must not both train it, and each worker
    # would otherwise compile the victim's training programs too.
    for p in pending:
        with contextlib.redirect_stdout(sys.stderr):
            p.sub.pipeline.victim = str(_victim(p.sub, workdir))
    calls, by_label = [], {}
    for p in pending:
        sub = ml_collections.ConfigDict(p.sub.to_dict())
        sub.restart = True
        sub.watermark.secret = ""  # the worker sets the unit's key; the owner's stays here
        call = study_pool.Call(
            label=f"study unit {p.name} seed {p.seed} key {p.key}",
            log=p.unit_dir / logfile.LOG_NAME,
            fn=study_pool.run_logged,
            args=(run_unit, sub.to_dict(), str(p.unit_dir), derived_key(secret, p.key), p.kinds,
                  cfg.study.attack_max_drop),
        )  # fmt: skip
        calls.append(call)
        by_label[call.label] = p
    n = min(cfg.study.workers, len(calls))
    _say(f"study: {len(calls)} units in {n} worker processes; each unit's output goes to its "
         f"own {logfile.LOG_NAME} (units/<cell>/s<seed>-k<key>/)")  # fmt: skip
    path = workdir / UNITS_FILE

    def on_done(call: study_pool.Call, result: tuple[dict[str, Any], float]) -> None:
        p = by_label[call.label]
        unit, wall = result
        unit.update(cell=p.name, seed=p.seed, key=p.key, fingerprint=p.fingerprint, wall_s=wall)
        _append(path, unit)
        _say(_progress(p.tag, unit))

    try:
        study_pool.run_calls(calls, cfg.study.workers, on_done)
    except JobError as e:
        raise JobError(f"{e}; the units that finished are in {path}: run the same command "
                       "again to resume") from None  # fmt: skip


def run_study(cfg: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Mode ``study``: every (cell, seed, key) unit, resumable, then ``STUDY.md``.

    Args:
      cfg: Validated config (``study.*`` and the base fields every cell starts from).
      workdir: The study's directory.

    Returns:
      The aggregate written to ``study.json`` (see :func:`jaxwm.runner.study_report.aggregate`).
    """
    t0 = time.perf_counter()
    secret = config.secret(cfg, embedding=True)  # fail before any training without a key
    cells = [(n, cell_config(cfg, n, o)) for n, o in parse_cells(cfg.study.cells)]
    for _, sub in cells:
        preflight.check(sub)  # every cell's data, model and triggers, before anything trains
    kinds = tuple(dict.fromkeys(cfg.study.attack_kinds))
    attacked = attack_cells(cfg.study.attack_cells, [n for n, _ in cells])
    # Cell-major order, cells as listed: a study stopped early has whole cells (list the verdict
    # cell first and its verdicts come first). Victims are trained once, when first needed.
    plan = [(n, sub, s, k) for n, sub in cells for s in cfg.study.seeds
            for k in range(cfg.study.num_keys)]  # fmt: skip
    path = workdir / UNITS_FILE
    done = {(u["cell"], u["seed"], u["key"], u["fingerprint"]) for u in read_units(path)}
    wanted = set()
    pending: list[_Pending] = []  # study.workers > 1: the units left for the workers, in order
    for i, (name, base, seed, key) in enumerate(plan):
        sub = ml_collections.ConfigDict(base.to_dict())
        sub.seed = seed
        unit_kinds = kinds if name in attacked else ()
        fp = unit_fingerprint(sub, key, unit_kinds, derived_key(secret, key))
        wanted.add((name, seed, key, fp))
        tag = f"[study {i + 1}/{len(plan)}] {name} seed {seed} key {key}"
        if (name, seed, key, fp) in done:
            _say(f"{tag}: done earlier, skipped")
            continue
        if cfg.study.report_only:
            _say(f"{tag}: not done, left out (study.report_only)")
            continue
        unit_dir = workdir / "units" / name / f"s{seed}-k{key}"
        if cfg.study.workers > 1:
            pending.append(_Pending(tag, name, seed, key, fp, sub, unit_kinds, unit_dir))
            continue
        t1 = time.perf_counter()
        # A victim's, a unit's Table 1 and attack table go to stderr (and log.txt): stdout
        # carries one report, STUDY.md.
        with contextlib.redirect_stdout(sys.stderr):
            sub.pipeline.victim = str(_victim(sub, workdir))
        sub.restart = True
        with _only_key(sub, derived_key(secret, key)), contextlib.redirect_stdout(sys.stderr):
            unit = run_unit(sub, unit_dir, unit_kinds, cfg.study.attack_max_drop)
        unit.update(cell=name, seed=seed, key=key, fingerprint=fp,
                    wall_s=time.perf_counter() - t1)  # fmt: skip
        _append(path, unit)
        _say(_progress(tag, unit))
    if pending:
        _run_in_workers(pending, cfg, workdir, secret)
    # Lines of units made with other fields (an earlier grid or config) are not this study's.
    units = [
        u for u in read_units(path) if (u["cell"], u["seed"], u["key"], u["fingerprint"]) in wanted
    ]
    latest = {(u["cell"], u["seed"], u["key"]): u for u in units}  # a redone unit: its last line
    # In plan order, not the order units finished in (workers): the same report either way.
    order = {(n, s, k): i for i, (n, _, s, k) in enumerate(plan)}
    units = sorted(latest.values(), key=lambda u: order[(u["cell"], u["seed"], u["key"])])
    return study_report.write(units, cfg, workdir, time.perf_counter() - t0)
