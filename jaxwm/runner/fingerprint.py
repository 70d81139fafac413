"""Every run directory is bound to the config fields that shape what it holds.

A training run writes ``<workdir>/fingerprint.json`` before its first checkpoint: the fields that
decide its result (:func:`train_fields`). A later run in that directory resumes or reuses the
checkpoints and the model only when its own fields are the same; otherwise it is refused with one
line naming the differing fields (old -> new), or, with ``restart=True``, the earlier run is moved
aside to ``<workdir>/replaced/<UTC time>/`` (one ``rename`` per file, the fingerprint last, so
whatever an interrupted move leaves is still bound to the earlier run) and the run starts afresh.

Fields that never change a trained model are left out: ``progress``, the compile cache,
``data.cache_dir``/``data.tfds_data_dir``, ``train.eval_every`` and ``train.checkpoint_every``
(evaluation and checkpoints only read the state). Every other ``model.*`` and ``train.*`` field is
in, so a field added later counts until it is listed in :data:`NEUTRAL`. ``data.source`` is
compared as written (the same data under another path is "another source"). The watermark secret
is never part of a fingerprint: it is never written to disk (the manifests commit to the sets).

Directories written before fingerprints existed are judged by the config they recorded: the
``config`` in ``model/meta.json`` when the run finished, else ``config.json`` when it holds
checkpoints (see :func:`adopt_legacy`); with neither, a resume is refused (``restart=True`` starts
afresh).

Saved models carry their fingerprint in ``meta.json`` (``"fingerprint"``): the train fields for a
victim, plus the watermark and embedding fields for a watermarked model (:func:`embed_fields`).

``embed`` and ``pipeline`` run directories are bound the same way (:func:`prepare`,
:func:`bind_pipeline`): their outputs are recomputed on every run, but a run with fewer
``embed.more_sets`` or ``pipeline.methods`` would leave the earlier run's extra manifests or
method models behind for ``verify`` and ``attack`` to pick up, so a rerun with other fields is
refused, or with ``restart=True`` every earlier output is moved aside first.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
from jax.experimental import multihost_utils

from jaxwm.engine import parallel
from jaxwm.errors import ConfigError

FILE = "fingerprint.json"
VERSION = 1
# Fields that never change a trained model (they only read it, or say how to report it).
NEUTRAL = frozenset({"train.eval_every", "train.checkpoint_every"})
# What a training run leaves in its directory; moved aside (the fingerprint last) on restart.
TRAIN_ARTEFACTS = ("checkpoints", "model", "metrics.jsonl", "results.json", "compile_stats.json")
# What an embed run leaves (glob patterns; any of them present means an earlier run).
EMBED_ARTEFACTS = ("model", "manifest*.json", "DIGEST.txt", "results.json")
PIPELINE_METHODS = ("partitioned", "baseline", "adi")
# What a pipeline leaves besides its victim and null models (which are bound on their own).
PIPELINE_ARTEFACTS = ("watermark", *PIPELINE_METHODS, "results.json", "table1.md")
# Pipeline fields that its method models do not record (they shape the directory, not a model).
PIPELINE_ONLY = ("pipeline.methods", "pipeline.victim", "verify.null_models")
RESTART_HINT = "set --config.restart=True to move it aside and start afresh"


def _canonical(value: Any) -> Any:
    """JSON-shaped value: tuples as lists, integral floats as ints (``1.0`` and ``1`` agree)."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _section(cfg: Mapping, name: str) -> Mapping:
    sec = cfg.get(name) if hasattr(cfg, "get") else None
    return sec if sec is not None else {}


def train_fields(cfg: Mapping) -> dict[str, Any]:
    """The fields that shape a trained model: ``seed``, ``data.source``, ``model.*``, ``train.*``.

    Args:
      cfg: A run config (ConfigDict) or the dict a run saved (``config.json``, ``meta.json``).

    Returns:
      ``{dotted name: value}`` without the :data:`NEUTRAL` fields.
    """
    out: dict[str, Any] = {
        "seed": cfg.get("seed"),
        "data.source": _section(cfg, "data").get("source"),
    }
    for section in ("model", "train"):
        for key, value in _section(cfg, section).items():
            if f"{section}.{key}" not in NEUTRAL:
                out[f"{section}.{key}"] = value
    return _canonical(out)


def embed_fields(cfg: Mapping, victim: dict | None = None, method: str | None = None) -> dict:
    """The fields that shape a watermarked model.

    Args:
      cfg: The run config.
      victim: The victim's fingerprint record (mode ``embed``); None means the victim is the
        one this config trains (mode ``pipeline``), whose train fields are included instead.
      method: The embedding method, when it is not ``embed.method`` (pipeline methods).

    Returns:
      ``{dotted name: value}``: seed, data.source, ``watermark.*`` (no secret), ``embed.*``
      (no victim path), and the victim's fingerprint digest or train fields.
    """
    out: dict[str, Any] = {
        "seed": cfg.get("seed"),
        "data.source": _section(cfg, "data").get("source"),
    }
    if victim is None:
        out.update(train_fields(cfg))
    else:
        out["victim"] = victim.get("digest")
    for key, value in _section(cfg, "watermark").items():
        if key != "secret":
            out[f"watermark.{key}"] = value
    for key, value in _section(cfg, "embed").items():
        if key != "victim":
            out[f"embed.{key}"] = value
    if method is not None:
        out["embed.method"] = method
    return _canonical(out)


def pipeline_fields(cfg: Mapping) -> dict[str, Any]:
    """The fields that shape a ``pipeline`` run directory.

    Args:
      cfg: The run config, or the config dict a pipeline method model saved.

    Returns:
      :func:`embed_fields` of the victim this config trains (less ``embed.method``, which a
      pipeline ignores) plus :data:`PIPELINE_ONLY`: which method directories and null models
      the run holds, and which victim it used.
    """
    out = embed_fields(cfg)
    del out["embed.method"]
    pipe, ver = _section(cfg, "pipeline"), _section(cfg, "verify")
    out["pipeline.methods"] = pipe.get("methods")
    out["pipeline.victim"] = pipe.get("victim")
    out["verify.null_models"] = ver.get("null_models")
    return _canonical(out)


def record(kind: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The JSON stored in ``fingerprint.json`` and in a saved model's ``meta.json``."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return {"version": VERSION, "kind": kind, "digest": digest, "fields": fields}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``"name old -> new"`` for each field that differs (``(absent)`` when one side lacks it)."""
    out = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name, "(absent)"), new.get(name, "(absent)")
        if a != b:
            out.append(f"{name} {a!r} -> {b!r}")
    return out


def has_run(workdir: Path, artefacts: tuple[str, ...] | None = None) -> bool:
    """Whether ``workdir`` holds an earlier run's outputs.

    Args:
      workdir: The run directory.
      artefacts: Glob patterns of the outputs of an ``embed`` or ``pipeline`` run; None means a
        training run: a model or a complete checkpoint.
    """
    if artefacts is not None:
        return any(next(workdir.glob(pat), None) is not None for pat in artefacts)
    ckpts = workdir / "checkpoints"
    if (workdir / "model").is_dir():
        return True
    return ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir())


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"cannot read {path}: {e}; move that run directory away or pick another --workdir"
        ) from e


def model_record(model_dir: Path) -> dict[str, Any] | None:
    """The fingerprint of the saved model in ``model_dir`` (a run or model directory), or None.

    Models saved before fingerprints existed get one computed from their ``meta.json`` config
    (the config that trained them).
    """
    meta_path = model_dir / "model" / "meta.json"
    if not meta_path.is_file():  # the model directory itself
        meta_path = model_dir / "meta.json"
    if not meta_path.is_file():
        return None
    meta = _read_json(meta_path)
    if "fingerprint" in meta:
        return meta["fingerprint"]
    if isinstance(meta.get("config"), dict) and meta.get("watermark") is None:
        return record("train", train_fields(meta["config"]))
    return None


def stored(workdir: Path) -> dict[str, Any] | None:
    """The fingerprint a run directory is bound to: ``fingerprint.json``, else its model's."""
    if (workdir / FILE).is_file():
        return _read_json(workdir / FILE)
    return model_record(workdir)


def adopt_legacy(workdir: Path) -> None:
    """Binds a pre-fingerprint training directory to the ``config.json`` it recorded.

    Call before ``config.json`` is rewritten. Only a directory with checkpoints but neither
    ``fingerprint.json`` nor a finished model (whose ``meta.json`` says more) is adopted.
    """
    cfg_path = workdir / "config.json"
    if (workdir / FILE).exists() or (workdir / "model").exists() or not cfg_path.is_file():
        return
    if not has_run(workdir):
        return
    old = _read_json(cfg_path)
    if isinstance(old, dict) and isinstance(old.get("train"), dict):
        rec = record("train", train_fields(old))
        rec["adopted_from"] = "config.json (written before fingerprints)"
        _write(workdir / FILE, rec)


def bind(
    workdir: Path,
    rec: dict[str, Any],
    *,
    restart: bool,
    label: str,
    artefacts: tuple[str, ...] | None = None,
    move: tuple[str, ...] | None = None,
) -> None:
    """Binds ``workdir`` to ``rec``, refusing to reuse a run made with other fields.

    Writes ``fingerprint.json`` (before any checkpoint). Safe to call twice.

    Args:
      workdir: The run directory.
      rec: This run's fingerprint (:func:`record`).
      restart: Move an earlier run aside (``replaced/<time>/``) instead of reusing or refusing.
      label: How messages name the directory, e.g. ``"--workdir runs/x"``.
      artefacts: The run's outputs (glob patterns, see :func:`has_run`); None: a training run.
      move: What a restart moves aside (glob patterns); default ``artefacts`` (or the
        training run's files).

    Raises:
      ConfigError: The directory holds a run with another fingerprint (the message lists the
        differing fields) or a pre-fingerprint run whose config was not recorded.
    """
    workdir = Path(workdir)
    old, earlier = stored(workdir), has_run(workdir, artefacts)
    _sync("jaxwm_fingerprint_read")  # every process decides on the same files
    if earlier:
        if restart:
            _move_aside(workdir, move or artefacts or TRAIN_ARTEFACTS)
        elif old is None:
            what = "checkpoints or model/" if artefacts is None else ", ".join(artefacts)
            raise ConfigError(
                f"{label} holds a run ({what}) with no record of its config "
                f"(written before jaxwm kept {FILE}), so a resume cannot be checked; "
                f"{RESTART_HINT}, or pick another --workdir"
            )
        elif old.get("kind") != rec["kind"]:
            raise ConfigError(
                f"{label} holds a model made by {old.get('kind')!r}, not a {rec['kind']!r} run; "
                f"pick another --workdir, or {RESTART_HINT}"
            )
        elif old.get("fields") != rec["fields"]:
            diff = differences(old.get("fields", {}), rec["fields"])
            raise ConfigError(
                f"{label} holds a run made with another config ({'; '.join(diff)}); rerun with "
                f"the config it was made with, pick another --workdir, or {RESTART_HINT} "
                f"(it goes to {workdir / 'replaced'})"
            )
    # Rewritten even when equal: every process then takes the same path to the barrier.
    _write(workdir / FILE, rec)
    _sync("jaxwm_fingerprint_bound")


def bind_train(cfg: Mapping, workdir: Path) -> dict[str, Any]:
    """Binds a training run's directory to ``cfg``'s train fields (see :func:`bind`).

    Returns:
      The fingerprint record, for the saved model's ``meta.json``.
    """
    rec = record("train", train_fields(cfg))
    bind(Path(workdir), rec, restart=bool(cfg.get("restart")), label=f"--workdir {str(workdir)!r}")
    return rec


def embed_record(cfg: Mapping) -> dict[str, Any]:
    """An ``embed`` run's fingerprint: its fields and its victim's (``embed.victim``) digest."""
    victim = model_record(Path(cfg.embed.victim)) if cfg.embed.victim else None
    return record("embed", embed_fields(cfg, victim or {}))


def bind_pipeline(cfg: Mapping, workdir: Path) -> dict[str, Any]:
    """Binds a ``pipeline`` run directory to :func:`pipeline_fields` (see :func:`bind`).

    A restart moves aside the victim and null models too (the whole earlier run); a directory
    written before pipelines kept a fingerprint is judged by the config its method models saved.

    Returns:
      The fingerprint record.
    """
    workdir = Path(workdir)
    rec = record("pipeline", pipeline_fields(cfg))
    if not (workdir / FILE).exists() and has_run(workdir, PIPELINE_ARTEFACTS):
        legacy = next((_read_json(m) for m in sorted(workdir.glob("*/model/meta.json"))
                       if m.parent.parent.name in PIPELINE_METHODS), None)  # fmt: skip
        if legacy is not None and isinstance(legacy.get("config"), dict):
            old = record("pipeline", pipeline_fields(legacy["config"]))
            old["adopted_from"] = "a method model's meta.json (written before fingerprints)"
            _write(workdir / FILE, old)
    move = PIPELINE_ARTEFACTS + ("null*",) + (() if cfg.pipeline.victim else ("victim",))
    bind(workdir, rec, restart=bool(cfg.get("restart")), label=f"--workdir {str(workdir)!r}",
         artefacts=PIPELINE_ARTEFACTS, move=move)  # fmt: skip
    return rec


def prepare(cfg: Mapping, workdir: Path) -> None:
    """What :func:`jaxwm.runner.modes.run` checks before it rewrites ``config.json``.

    A pre-fingerprint directory is bound to its old ``config.json`` first; a ``train``,
    ``embed`` or ``pipeline`` run is then checked here, so a refused run leaves ``config.json``
    describing the run that is there.
    """
    workdir = Path(workdir)
    mode = cfg.get("mode")
    adopt_legacy(workdir)
    _sync("jaxwm_fingerprint_adopted")  # every process, so all then read the same file
    if mode == "train":
        bind_train(cfg, workdir)
    elif mode == "embed" and cfg.embed.victim:  # without a victim run_embed says what to do
        bind(workdir, embed_record(cfg), restart=bool(cfg.get("restart")),
             label=f"--workdir {str(workdir)!r}", artefacts=EMBED_ARTEFACTS)  # fmt: skip
    elif mode == "pipeline":
        bind_pipeline(cfg, workdir)


def check_model(run_dir: Path, rec: dict[str, Any], *, label: str, hint: str) -> None:
    """Refuses a saved model whose fingerprint differs from ``rec`` (no restart: not ours).

    Raises:
      ConfigError: naming ``label``, the differing fields and ``hint``.
    """
    old = model_record(run_dir)
    if old is None:
        raise ConfigError(f"{label} has no record of the config it was trained with; {hint}")
    if old.get("kind") != rec["kind"]:
        raise ConfigError(f"{label} holds a model made by {old.get('kind')!r}, not by "
                          f"{rec['kind']!r}; {hint}")  # fmt: skip
    if old.get("fields") != rec["fields"]:
        diff = differences(old.get("fields", {}), rec["fields"])
        raise ConfigError(f"{label} was trained with another config ({'; '.join(diff)}); {hint}")


def _write(path: Path, obj: Any) -> None:
    if not parallel.is_primary():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _move_aside(workdir: Path, patterns: tuple[str, ...]) -> None:
    """Moves an earlier run's files (glob ``patterns``) to ``replaced/<UTC time>/``, the
    fingerprint last."""
    if parallel.is_primary():
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        dest = workdir / "replaced" / stamp
        n = 1
        while dest.exists():
            n += 1
            dest = workdir / "replaced" / f"{stamp}-{n}"
        dest.mkdir(parents=True)
        moved = []
        names = sorted({p.name for pat in patterns for p in workdir.glob(pat)} - {FILE})
        for name in (*names, FILE):  # the fingerprint last: what stays is still bound
            if (workdir / name).exists():
                (workdir / name).rename(dest / name)
                moved.append(name)
        print(f"restart: moved the earlier run ({', '.join(moved)}) to {dest}", file=sys.stderr)
    _sync("jaxwm_fingerprint_moved")


def _sync(name: str) -> None:
    """Barrier across processes: the others must not read checkpoints being moved."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
