"""Run configuration: the defaults every config file starts from, their validation, the secret.

Config files in ``configs/`` call :func:`defaults` (or :func:`preset`) and change what their
experiment needs; the command line overrides any field (``--config.train.epochs=5``).
:func:`validate` then checks every field against the defaults -- unknown names (with a
suggestion), wrong types and values out of range fail before any work starts, naming the field.
The fields themselves (default, meaning, check) are declared in :mod:`jaxwm.runner.config_fields`.

Configs are for runs (``launch.py``); the library functions take explicit arguments.
"""

from __future__ import annotations

import difflib
import os
import sys
from typing import Any

import ml_collections

from jaxwm import embed, triggers
from jaxwm.errors import ConfigError
from jaxwm.runner import config_fields

SECRET_ENV = "JAXWM_SECRET"


def defaults() -> ml_collections.ConfigDict:
    """The complete set of fields, with defaults suited to the embedded ``digits`` demo.

    Every field, its default, meaning and check are declared in
    :data:`jaxwm.runner.config_fields.FIELDS`.
    """
    c = ml_collections.ConfigDict()
    for f in config_fields.FIELDS:
        section, _, name = f.name.rpartition(".")
        if section and section not in c:
            c[section] = ml_collections.ConfigDict()
        (c[section] if section else c)[name] = f.default
    return c


def _flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in cfg.items():
        name = f"{prefix}{k}"
        if isinstance(v, ml_collections.ConfigDict | dict):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def _type_ok(default: Any, value: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, tuple | list):
        if not isinstance(value, tuple | list):
            return False
        kinds = {type(x) for x in default}
        return all(any(_type_ok(k(), x) for k in kinds) for x in value) if kinds else True
    return isinstance(value, type(default))


def validate(cfg: ml_collections.ConfigDict, reference: ml_collections.ConfigDict | None = None):
    """Checks ``cfg`` against ``reference`` (default: :func:`defaults`) field by field.

    Raises:
      ConfigError: naming the first unknown, ill-typed or out-of-range field.
    """
    ref = _flatten(reference if reference is not None else defaults())
    got = _flatten(cfg)
    for name, value in got.items():
        if name in config_fields.RENAMED:
            raise ConfigError(
                f"config field {name!r} was replaced by {config_fields.RENAMED[name]}"
            )
        if name not in ref:
            close = difflib.get_close_matches(name, list(ref), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown config field {name!r}{hint}")
        if not _type_ok(ref[name], value):
            raise ConfigError(
                f"config field {name!r} must be of type {type(ref[name]).__name__} like "
                f"{ref[name]!r}, got {value!r} ({type(value).__name__})"
            )
    for name in ref:
        if name not in got:
            raise ConfigError(f"config field {name!r} is missing; start configs from defaults()")
    for f in config_fields.FIELDS:
        if f.check is not None and f.name in got and not f.check.test(got[f.name]):
            raise ConfigError(
                f"config field {f.name!r} must be {f.check.want}, got {got[f.name]!r}"
            )
    if len(got["model.stage_sizes"]) != len(got["model.widths"]):
        raise ConfigError(
            "config fields 'model.stage_sizes' and 'model.widths' must have equal length"
        )
    resolve_operating_point(cfg)
    return cfg


def resolve_operating_point(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Fills ``embed.clean_per_trigger`` and ``embed.target_retention`` from the operating point.

    A field left at -1 takes the named point's value (``custom``: 0). A value given for a named
    point must agree with it: ``paper_literal`` takes no clean images and no early stop,
    ``mixed`` some clean images (any number > 0) and no early stop, ``matched`` both (any
    values > 0). Anything else is a :class:`ConfigError` naming both fields, so a typed value
    is never silently overridden. Idempotent (:func:`validate` calls it; so may reruns).

    Args:
      cfg: A config whose fields have been type-checked; changed in place.

    Returns:
      ``cfg``.

    Example:
      >>> c = defaults(); c.embed.operating_point = "mixed"
      >>> resolve_operating_point(c).embed.clean_per_trigger
      2.0
    """
    e = cfg.embed
    name = e.operating_point
    if name == "custom":
        point = embed.OperatingPoint(0.0, 0.0, "the fields as given")
    else:
        point = embed.OPERATING_POINTS[name]
    for field in ("clean_per_trigger", "target_retention"):
        given, implied = e[field], getattr(point, field)
        if given == config_fields.FROM_POINT:
            e[field] = float(implied)
        elif name != "custom" and (given > 0) != (implied > 0):
            raise ConfigError(
                f"config field 'embed.{field}'={given!r} contradicts "
                f"'embed.operating_point'={name!r} ({point.reading}); leave embed.{field} "
                "unset, or set embed.operating_point='custom' to use the fields as given"
            )
    return cfg


def from_dict(d: dict[str, Any]) -> ml_collections.ConfigDict:
    """A validated config from a plain dict such as a saved ``config.json`` (lists -> tuples).

    Example:
      >>> cfg = from_dict(json.loads(Path("runs/demo/config.json").read_text()))
    """

    def fix(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        return tuple(fix(x) for x in v) if isinstance(v, list) else v

    cfg = ml_collections.ConfigDict(fix(d))
    validate(cfg)
    return cfg


_warned_demo_key = False


def _warn_demo_key_once() -> None:
    # A run asks for the key several times (sets, controls, verification): one warning is enough.
    global _warned_demo_key
    _warned_demo_key = True


def secret(cfg: ml_collections.ConfigDict, *, embedding: bool = False) -> str:
    """The owner's secret: ``watermark.secret`` or the ``JAXWM_SECRET`` environment variable.

    Both set and different is an error (one of them would silently win). The demo's public key
    prints a warning; embedding refuses keys under 128 bits (the demo's excepted).

    Args:
        cfg: The run's config.
        embedding: Whether the key is about to watermark a model.

    Returns:
        The key.
    """
    from_cfg, from_env = cfg.watermark.secret, os.environ.get(SECRET_ENV, "")
    if from_cfg and from_env and from_cfg != from_env:
        raise ConfigError(
            f"watermark.secret and ${SECRET_ENV} are both set and differ; keep one "
            f"(unset {SECRET_ENV}, or pass --config.watermark.secret='' to use it)"
        )
    value = from_cfg or from_env
    if value == triggers.DEMO_SECRET and not _warned_demo_key:
        _warn_demo_key_once()
        print(
            "warning: this is the demo's published watermark key: anybody can regenerate its "
            "trigger sets, so it proves nothing in a dispute; use your own key (JAXWM_SECRET)",
            file=sys.stderr,
        )
    elif value and embedding:
        triggers.check_secret_strength(value)
    if not value:
        raise ConfigError(
            f"no watermark secret: set --config.watermark.secret=... or the {SECRET_ENV} environment "
            "variable (python -c 'from jaxwm.triggers import generate_secret; print(generate_secret())' "
            "makes one). Keep it: it regenerates the watermark set for verification."
        )
    return value


def public_dict(cfg: ml_collections.ConfigDict) -> dict:
    """The config as a plain dict with the secret redacted, safe to write next to results."""
    d = cfg.to_dict()
    if d.get("watermark", {}).get("secret"):
        d["watermark"]["secret"] = "<redacted>"
    return d


# Paper-scale settings per dataset: ResNet18, bf16 compute, whole dataset on the accelerator.
_PRESETS: dict[str, dict[str, Any]] = {
    "mnist": {
        "data.source": "tfds:mnist",
        "train.epochs": 8, "train.batch_size": 512, "train.peak_lr": 0.2,
        "train.warmup_epochs": 1.0, "train.crop_pad": 2, "train.flip": False,
    },
    "cifar10": {
        "data.source": "tfds:cifar10",
        "train.epochs": 50, "train.batch_size": 512, "train.peak_lr": 0.4,
        "train.warmup_epochs": 12.0, "train.schedule": "linear", "train.label_smoothing": 0.1,
    },
    "cifar100": {
        "data.source": "tfds:cifar100",
        "train.epochs": 60, "train.batch_size": 512, "train.peak_lr": 0.4,
        "train.warmup_epochs": 15.0, "train.schedule": "linear", "train.label_smoothing": 0.1,
    },
}  # fmt: skip


def preset(dataset: str) -> ml_collections.ConfigDict:
    """Defaults plus the paper-scale settings for ``mnist``, ``cifar10`` or ``cifar100``.

    The watermark is 100 abstract images with random labels embedded into ``layer4`` and
    ``head`` (Algorithm 1 unfreezes ``head`` first), at the default operating point
    ``matched`` (2 clean images per trigger, stopped at 85% retention on D); the paper's
    literal D alone is ``embed.operating_point="paper_literal"``.
    """
    if dataset not in _PRESETS:
        raise ConfigError(f"no preset for {dataset!r}; known: {sorted(_PRESETS)}")
    c = defaults()
    c.model.dtype = "bfloat16"
    c.train.eval_every = 5
    c.train.checkpoint_every = 5
    c.embed.layers_to_turn = ("layer4", "head")
    # Measured on an H200 (bench/embed_grid.py, bench/RESULTS.md): AdamW 1e-3 diverges on
    # ResNet18 with D alone; 1e-4 in batches of 20 for 60 epochs reaches ~97-99% retention.
    c.embed.epochs = 60
    c.embed.batch_size = 20
    c.embed.lr = 1e-4
    for dotted, value in _PRESETS[dataset].items():
        section, name = dotted.split(".")
        c[section][name] = value
    return c
