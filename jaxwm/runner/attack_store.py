"""The record store of mode ``attack``: ``attacks.jsonl``, one line per attacked point, and resume.

:mod:`jaxwm.runner.attack_runs` appends each point's record here as soon as it is measured (one
``write`` of one line, flushed and fsynced), so a crash or Ctrl-C loses at most the point in
flight. A rerun in the same ``--workdir`` reads the file back and skips every point it holds;
a line cut short by a kill (no newline, or not JSON) is dropped and cut off the file before
anything is appended.

The file is only valid for the fields that decide a point's result, so the run directory is
bound to them the way :mod:`jaxwm.runner.fingerprint` binds training runs (:func:`bind`): the
seed, ``data.source``, the source pipeline's fingerprint, the ``watermark.*`` (no secret),
``embed.*`` (overwriting and the adaptive attacker reuse them) and verification fields, and
every ``attack.*`` field except those that only choose *which* points run or how they are
reported (:data:`NEUTRAL`): the kinds, the schemes, the strength lists (a point's result does
not depend on the other strengths, see :data:`jaxwm.runner.attack_registry.PointsFn`), the
plots, ``figure_widths`` and ``save_models``. A rerun with other fields is refused in one line naming them;
``restart=True`` moves the earlier records and outputs aside to ``<workdir>/replaced/<time>/``.

Example:
  >>> rec = bind(cfg, workdir, source_dir)
  >>> done = {key(r): r for r in read(workdir / FILE)}
  >>> append(workdir / FILE, record)
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_collections

from jaxwm.errors import ConfigError
from jaxwm.runner import attack_registry, fingerprint

FILE = "attacks.jsonl"
# What an attack run leaves (moved aside, the fingerprint last, by a restart).
OUTPUTS = (FILE, "attacks.json", "attacks.csv", "attacks.md", "attacked", "fig*.png",
           "attacks_*.png")  # fmt: skip
# attack.* fields that choose which points run or how they are reported, never a result.
NEUTRAL = frozenset({"attack.kinds", "attack.schemes", "attack.plots", "attack.save_models",
                     "attack.source", "attack.figure_widths"})  # fmt: skip
VERIFY_FIELDS = ("alpha", "fpr", "confidence", "nulls")  # what ctx.measure's verdict reads

Key = tuple[str, str, float]


def fields(cfg: ml_collections.ConfigDict, source: Path) -> dict[str, Any]:
    """The fields that decide an attack point's record (see the module docstring).

    Args:
      cfg: The attack run's config.
      source: ``attack.source``; its pipeline fingerprint's digest stands for the models (the
        path itself when the pipeline kept none).

    Returns:
      ``{dotted name: value}``, JSON-shaped (tuples as lists).
    """
    strength_fields = {f"attack.{k.strengths}" for k in attack_registry.KINDS}
    src = fingerprint.stored(Path(source))
    out: dict[str, Any] = {
        "seed": cfg.seed,
        "data.source": cfg.data.source,
        "source": src["digest"] if src else str(source),
    }
    for key, value in cfg.watermark.items():
        if key != "secret":
            out[f"watermark.{key}"] = value
    for key, value in cfg.embed.items():
        if key != "victim":
            out[f"embed.{key}"] = value
    for key in VERIFY_FIELDS:
        out[f"verify.{key}"] = cfg.verify[key]
    for key, value in cfg.attack.items():
        name = f"attack.{key}"
        if name not in NEUTRAL and name not in strength_fields:
            out[name] = value
    return json.loads(json.dumps(_plain(out)))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def bind(cfg: ml_collections.ConfigDict, workdir: Path, source: Path) -> dict[str, Any]:
    """Binds ``workdir`` to :func:`fields`, refusing records made with other fields.

    Args:
      cfg: The attack run's config (``restart`` moves an earlier run aside).
      workdir: The run directory.
      source: ``attack.source``.

    Returns:
      The fingerprint record (also in ``<workdir>/fingerprint.json``).

    Raises:
      ConfigError: ``workdir`` holds records made with other fields (the message names them).
    """
    workdir = Path(workdir)
    mine = workdir / fingerprint.FILE
    other = fingerprint.stored(workdir) if mine.is_file() else None
    if workdir.resolve() == Path(source).resolve() or (other and other.get("kind") != "attack"):
        # Binding would overwrite the pipeline's (or a training run's) own fingerprint.
        raise ConfigError(
            f"--workdir {str(workdir)!r} holds a {(other or {}).get('kind', 'pipeline')!r} run, "
            f"not attack records; give mode=attack a directory of its own, e.g. "
            f"--workdir={Path(source) / 'attack'}"
        )
    rec = fingerprint.record("attack", fields(cfg, source))
    fingerprint.bind(Path(workdir), rec, restart=bool(cfg.restart),
                     label=f"--workdir {str(workdir)!r}", artefacts=(FILE,),
                     move=OUTPUTS)  # fmt: skip
    return rec


def key(record: Mapping[str, Any]) -> Key:
    """A point's identity: ``(scheme, attack kind, strength)``."""
    return str(record["scheme"]), str(record["attack"]), float(record["strength"])


def read(path: Path) -> list[dict[str, Any]]:
    """The records in ``path`` (none when it is missing), a torn last line dropped.

    A last line without its newline or that is not JSON is what a kill mid-write leaves: it is
    cut off the file (so the next :func:`append` starts a clean line) and reported on stderr.
    A later point recorded twice keeps its first record.

    Args:
      path: The ``attacks.jsonl`` file.

    Returns:
      The records, in file order.

    Raises:
      ConfigError: a line other than the last is not a JSON record (the file was edited).
    """
    if not path.is_file():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    good_end, out, seen = 0, [], set()
    for i, line in enumerate(lines):
        last = i == len(lines) - 1  # the text after the final newline ("" when complete)
        if last and not line:
            break
        try:
            rec = json.loads(line) if not last else None
            if rec is not None and not isinstance(rec, dict):
                raise ValueError("not an object")
        except ValueError as e:
            if i < len(lines) - 2:  # a complete line in the middle: not a kill
                raise ConfigError(
                    f"{path} line {i + 1} is not a JSON record ({e}); restore the file or "
                    "rerun with --config.restart=True to move it aside"
                ) from None
            rec = None
        if rec is None:  # torn: no newline, or the last line cut mid-record
            print(f"attack: dropped a partial last record in {path} (the run was killed while "
                  "writing it); that point runs again", file=sys.stderr)  # fmt: skip
            with open(path, "r+b") as f:
                f.truncate(good_end)
                os.fsync(f.fileno())
            break
        good_end += len(line) + 1
        if key(rec) not in seen:
            seen.add(key(rec))
            out.append(rec)
    return out


def append(path: Path, record: Mapping[str, Any]) -> None:
    """Appends ``record`` as one JSON line, in one write, flushed and fsynced.

    Args:
      path: The ``attacks.jsonl`` file (created if missing).
      record: A JSON-ready record (numpy scalars become floats).
    """
    line = (json.dumps(record, sort_keys=True, default=float) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
