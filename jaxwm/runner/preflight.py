"""Checks a run's config before any work: what fails later should fail first.

``pipeline`` trains a victim before it builds the watermark set and embeds it, so a typo in
``embed.layers_to_turn`` or a ``watermark.size`` its source cannot provide used to surface only
after the victim had trained. :func:`check` runs the library's own validators on what they will
see -- the model's parameter tree (its shape only, from ``jax.eval_shape`` of ``model.init``: no
training, no memory), the dataset's split sizes and the trigger source -- before the mode starts.
Every failure is a :class:`~jaxwm.errors.JaxwmError` naming the config field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxwm import data, manifest, models
from jaxwm.engine import epochs, parallel, partition
from jaxwm.errors import ConfigError, PatternError, TriggerSetError
from jaxwm.runner import experiments, runs

# Modes that train a model on cfg.data with cfg.train, and those that embed cfg.watermark.
TRAINING_MODES = ("train", "sweep", "pipeline")
EMBEDDING_MODES = ("pipeline", "embed")
# Attacks that re-train the watermark layers (embed.layers_to_turn) of the attacked model.
LAYER_ATTACKS = ("adaptive", "overwrite")


def check(cfg: ml_collections.ConfigDict) -> None:
    """Runs every check ``cfg.mode`` needs before it starts (``cfg`` already validated).

    Args:
      cfg: The run's config.

    Raises:
      ConfigError, PatternError, TriggerSetError, DatasetError: naming the field to change.
    """
    if cfg.mode in EMBEDDING_MODES and cfg.watermark.size > manifest.MAX_TRIGGERS:
        raise ConfigError(
            f"config field 'watermark.size' must be <= {manifest.MAX_TRIGGERS:,} (the largest set "
            f"a verifier regenerates from a manifest), got {cfg.watermark.size:,}"
        )
    model_cfg = _model_config(cfg)
    if model_cfg is not None:
        check_layers(cfg, model_cfg)
    if cfg.mode in TRAINING_MODES:
        ds = experiments.load_data(cfg)
        check_batch_size(cfg, len(ds.train_labels))
        if cfg.mode == "pipeline":
            check_watermark_source(cfg, ds)


def _model_config(cfg: ml_collections.ConfigDict) -> Any | None:
    """The config whose ``model`` section builds the network the layer patterns address, or
    None when the mode uses no patterns (or the saved run is unreadable: the mode reports it)."""
    if cfg.mode == "pipeline":
        return cfg if "partitioned" in cfg.pipeline.methods else None
    if cfg.mode == "embed" and cfg.embed.method == "partitioned" and cfg.embed.victim:
        return _saved_config(Path(cfg.embed.victim))
    if cfg.mode == "attack" and set(cfg.attack.kinds) & set(LAYER_ATTACKS) and cfg.attack.source:
        return _saved_config(Path(cfg.attack.source) / "victim")
    return None


def _saved_config(run_dir: Path) -> ml_collections.ConfigDict | None:
    meta = run_dir / "model" / "meta.json"
    if not meta.is_file():
        meta = run_dir / "meta.json"  # the model directory itself
    try:
        saved = json.loads(meta.read_text())["config"]
        return ml_collections.ConfigDict(saved)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def param_shapes(model_cfg: ml_collections.ConfigDict) -> Any:
    """The parameter tree of the network ``model_cfg.model`` describes, as shapes only.

    Parameter paths depend on the architecture alone (not on the image size or the number of
    classes), so a small stand-in input gives the same paths as the real data.

    Args:
      model_cfg: A config with a ``model`` section (stage_sizes, widths).

    Returns:
      A pytree of ``jax.ShapeDtypeStruct`` like the model's ``params``.
    """
    m = model_cfg.model
    model = models.resnet(2, stage_sizes=tuple(m.stage_sizes), widths=tuple(m.widths))
    sample = jnp.zeros((1, 8, 8, 1), jnp.float32)
    params, _ = jax.eval_shape(model.init, jax.random.key(0), sample)
    return params


def check_layers(cfg: ml_collections.ConfigDict, model_cfg: ml_collections.ConfigDict) -> None:
    """Every pattern of ``embed.layers_to_turn`` and ``embed.more_sets`` must select parameters.

    Uses :func:`jaxwm.engine.partition.trainable_mask`, the function embedding itself calls.

    Raises:
      PatternError: naming the field and the paths that exist.
    """
    params = param_shapes(model_cfg)
    groups = [("embed.layers_to_turn", list(cfg.embed.layers_to_turn))]
    if cfg.mode in EMBEDDING_MODES:
        for i, g in enumerate(cfg.embed.more_sets):
            groups.append((f"embed.more_sets[{i}]", [p.strip() for p in g.split(",") if p.strip()]))
    for field, patterns in groups:
        try:
            partition.trainable_mask(params, patterns, log_table=False)
        except PatternError as e:
            raise PatternError(f"config field {field!r}: {e}") from None


def check_batch_size(cfg: ml_collections.ConfigDict, n_train: int) -> None:
    """``train.batch_size`` must fit the training split (and the data-parallel devices).

    Raises:
      ConfigError: naming ``train.batch_size``.
    """
    try:
        epochs.epoch_geometry(n_train, cfg.train.batch_size, cfg.train.steps_per_call)
        if cfg.mode != "sweep" and jax.device_count() > 1:  # loop.fit shards each batch
            parallel.check_divisible(cfg.train.batch_size, parallel.data_mesh())
    except ValueError as e:
        raise ConfigError(
            f"config field 'train.batch_size': {e} (data.source={cfg.data.source!r})"
        ) from None


def check_watermark_source(cfg: ml_collections.ConfigDict, ds: data.Dataset) -> None:
    """The watermark sets must be buildable from their source (``content``: the training set;
    ``unrelated``/``folder``: ``watermark.source``), e.g. hold ``watermark.size`` images.

    Builds them as the mode will (:func:`jaxwm.runner.runs.make_sets`); ``noise`` sets need no
    source and are skipped (their size limit is checked in :func:`check`).

    Raises:
      TriggerSetError: naming the watermark fields.
    """
    if cfg.watermark.kind == "noise":
        return
    try:
        runs.make_sets(cfg, ds)
    except TriggerSetError as e:
        w = cfg.watermark
        raise TriggerSetError(
            f"{e} (config: watermark.kind={w.kind!r}, watermark.size={w.size}, "
            f"watermark.source={w.source or cfg.data.source!r}); lower watermark.size or use "
            "a larger source"
        ) from None
