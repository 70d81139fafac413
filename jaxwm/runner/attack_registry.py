"""The attack registry of mode ``attack``: one entry per attack kind, every fact about it in one place.

Each :class:`AttackKind` names the kind (what ``attack.kinds`` lists), the function that yields
its attacked models over a list of strengths, the unit of those strengths, the ``attack.*``
config field that holds them, the figure, panel, title, axis name and axis spacing
:mod:`jaxwm.runner.plots` draws it with, and whether a larger strength is the stronger attack
(fewer quantization bits is stronger).
:mod:`jaxwm.runner.config` takes the kind names from here, :mod:`jaxwm.runner.attack_runs` the
functions and units, :mod:`jaxwm.runner.attack_tables` the order of strengths.

Adding an attack: write the pure function in ``jaxwm/attacks/``, a points function below that
calls it once per strength, its strengths field in :mod:`jaxwm.runner.config_fields`, and one
entry in :data:`KINDS`. New kinds go at the end: a kind's position seeds its random key, so
moving one would change the results of the others.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import ml_collections
import numpy as np

from jaxwm import attacks, controls, embed, triggers, verify
from jaxwm.engine.hparams import Hparams
from jaxwm.errors import ConfigError

PyTree = Any
Point = tuple[float, PyTree, PyTree, dict[str, Any]]  # (strength, params, state, extra fields)
LAST_LAYER = "head"  # the models of jaxwm.models name their classifier "head"


@dataclasses.dataclass
class AttackContext:
    """What every attack needs, built once per run (compiled functions included)."""

    cfg: ml_collections.ConfigDict
    model: Any
    mean: tuple[float, ...]
    std: tuple[float, ...]
    x_att: np.ndarray
    y_att: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    trig: triggers.TriggerSet
    num_classes: int
    nulls: list[float]
    evaluate: Callable
    predict: Callable
    embed_settings: Hparams  # the run's embedding settings (overwriting reuses them)
    ctl_images: list[np.ndarray] | None = None  # one array per control set
    ctl_labels: list[np.ndarray] | None = None

    def labels_on(self, params: PyTree, state: PyTree, images: Any = None) -> np.ndarray:
        """Predicted labels on the owner's triggers (or on ``images``)."""
        images = self.trig.images if images is None else images
        bs = min(256, len(images))
        return verify.predict_labels(lambda x: self.predict(params, state, x), images, bs)

    def measure(self, params: PyTree, state: PyTree) -> tuple[float, verify.Verdict]:
        """Clean accuracy on the evaluation split, and the owner's verdict."""
        acc = float(self.evaluate(params, state, self.x_eval, self.y_eval))
        pred = self.labels_on(params, state)
        clustered = controls.clustered(self.trig.kind)
        c_pred = c_lab = None
        if self.ctl_images:  # a rank test stops predicting once it cannot reject (same verdict)
            c_pred, c_lab = verify.predict_controls(
                lambda x: self.labels_on(params, state, x), self.ctl_images, self.ctl_labels,
                int(np.sum(pred == self.trig.labels)), alpha=self.cfg.verify.alpha,
                clustered=clustered,
            )  # fmt: skip
        v = verify.verify_predictions(
            pred, self.trig.labels, self.num_classes,
            alpha=self.cfg.verify.alpha, chance=triggers.chance_level(self.trig.params),
            control_predicted=c_pred, control_labels=c_lab, control_clustered=clustered,
            control_sets_planned=len(self.ctl_images or ()),
            fpr=self.cfg.verify.fpr, confidence=self.cfg.verify.confidence,
            null_retentions=self.nulls,
        )  # fmt: skip
        return acc, v


# A points function: (context, params, state, key, strengths in increasing order) -> the
# attacked model at each strength, in that order.
PointsFn = Callable[[AttackContext, PyTree, PyTree, Any, Sequence[float]], Iterator[Point]]


@dataclasses.dataclass(frozen=True)
class AttackKind:
    """One attack kind of mode ``attack``.

    Attributes:
      name: The kind, as ``attack.kinds`` lists it and records name it.
      points: Yields ``(strength, params, state, extra record fields)`` per strength.
      unit: Unit of the strengths ("epochs", "ratio", "bits", "sigma", "max_drop": the
        clean-accuracy drop, as a fraction, at which liu_fine_prune stops pruning).
      strengths: The ``attack.*`` config field holding its strengths.
      group: The figure of :mod:`jaxwm.runner.plots` it is drawn in.
      panel: Its panel's position in that figure (the paper's main setting first).
      title: The panel title.
      larger_is_stronger: False when a smaller strength is the stronger attack (bits).
      axis: The x-axis name with its unit, as a paper figure prints it ("fine-tuning
        epochs"); empty: "strength (<unit>)".
      xscale: How the plots space the strengths: "linear"; "log2" (symmetric log base 2,
        linear below 1, so 0, 1, 2, 4 ... 32 epochs are evenly spaced and 0 still shows);
        "discrete" (ticks at exactly the strengths run, e.g. 8, 6, 4 bits).
      short: The kind's name in legends ("FTAL"); empty: ``name``.
    """

    name: str
    points: PointsFn
    unit: str
    strengths: str
    group: str
    panel: int
    title: str
    larger_is_stronger: bool = True
    axis: str = ""
    xscale: str = "linear"
    short: str = ""


XSCALES = ("linear", "log2", "discrete")  # tests/test_attack_registry.py: every entry uses one


def _data(ctx: AttackContext, key) -> dict[str, Any]:
    return dict(mean=ctx.mean, std=ctx.std, key=key, batch_size=ctx.cfg.attack.batch_size)


def owner_head(attacked: PyTree, stolen: PyTree) -> PyTree:
    """The attacked parameters with the stolen model's classifier put back.

    Adi et al.'s reference code (WatermarkNN, ``fine-tune.py``) measures the watermark of a
    re-initialised-head attack (RTLL/RTAL) this way: after each epoch it swaps the owner's
    original last layer back in, tests the trigger set, then plugs the attacker's layer back.

    Args:
      attacked: Parameters after the attack.
      stolen: The watermarked model's parameters (same structure).

    Returns:
      ``attacked`` with every leaf under :data:`LAST_LAYER` taken from ``stolen``.
    """
    return {k: (stolen[k] if k == LAST_LAYER else v) for k, v in attacked.items()}


def _finetune(ctx, params, state, key, strengths, *, last_only: bool, reinit: bool):
    """FTLL/FTAL/RTLL/RTAL: one training run gives every strength (snapshots, constant lr).

    RTLL/RTAL also record ``retention_owner_head``: retention through the owner's original head
    on the attacked features, as Adi et al. measure it (the ``retention`` column reads the
    attacker's new head, the model the attacker actually deploys).
    """
    extra: dict[str, Any] = {}
    if last_only:
        extra["trainable"] = [LAST_LAYER]
    if reinit:
        extra.update(reinit=[LAST_LAYER], init_fn=ctx.model.init)
    outs = attacks.finetune_sweep(ctx.model.apply, params, state, ctx.x_att, ctx.y_att,
                                  strengths=list(strengths), lr=ctx.cfg.attack.ft_lr,
                                  **_data(ctx, key), **extra)  # fmt: skip
    for e, (p, s) in zip(strengths, outs, strict=True):
        extra = {}
        if reinit:
            labels = ctx.labels_on(owner_head(p, params), s)
            extra["retention_owner_head"] = verify.retention(labels, ctx.trig.labels)
        yield e, p, s, extra


def _adaptive(ctx, params, state, key, strengths):
    """Algorithm 1's schedule depends on the total epochs, so each strength is its own run."""
    for e in strengths:
        p, s = attacks.adaptive_finetune(
            ctx.model.apply, params, state, ctx.x_att, ctx.y_att,
            layers_to_turn=list(ctx.cfg.embed.layers_to_turn), epochs=e, lr=ctx.cfg.attack.ft_lr,
            **_data(ctx, key),
        )  # fmt: skip
        yield e, p, s, {}


def _scoped(ctx) -> tuple[Callable, dict, list[str]]:
    """``(activations fn, prunable table, unit names)`` of ``attack.prune_scope``."""
    m = ctx.model
    names = attacks.scope_units(ctx.cfg.attack.prune_scope, m.prunable, m.unit_scopes)
    if ctx.cfg.attack.prune_scope == "block":
        return m.activations, m.prunable, names
    return m.units, m.unit_prunable, names


def _prune(ctx, params, state, key, strengths):
    """Activation-frequency pruning: the frequencies are measured once, on the attacker's data.

    ``attack.prune_scope`` says which units may go, ``attack.prune_ranking`` whether the ratio
    is counted over all of them (the paper) or within each layer.
    """
    acts_fn, table, names = _scoped(ctx)
    freqs = attacks.activation_frequency(acts_fn, params, state, ctx.x_att,
                                         mean=ctx.mean, std=ctx.std)  # fmt: skip
    freqs = {k: freqs[k] for k in names}
    for r in strengths:
        keep = attacks.frequency_keep_masks(freqs, r, scope=ctx.cfg.attack.prune_ranking)
        mask = attacks.channel_masks_to_param_mask(keep, table, params)
        yield r, attacks.apply_mask(params, mask), state, {}


def _magnitude(ctx, params, state, key, strengths):
    for r in strengths:
        yield r, attacks.apply_mask(params, attacks.magnitude_mask(params, r)), state, {}


def _fine_prune(ctx, params, state, key, strengths):
    m, a = ctx.model, ctx.cfg.attack
    acts_fn, table, names = _scoped(ctx)
    for r in strengths:
        p, s = attacks.fine_prune(
            m.apply, acts_fn, table, params, state, ctx.x_att, ctx.y_att,
            ratio=r, epochs=a.fine_prune_epochs, lr=a.ft_lr, scope=a.prune_ranking, layers=names,
            **_data(ctx, key),
        )  # fmt: skip
        yield r, p, s, {}


def _liu_fine_prune(ctx, params, state, key, strengths):
    """Liu et al.'s fine-pruning; a strength is the accuracy drop that stops the pruning."""
    m, a = ctx.model, ctx.cfg.attack
    layer = a.liu_layer or attacks.default_layer(m.prunable)
    acts_fn, table = m.activations, m.prunable
    if layer not in table and m.unit_prunable and layer in m.unit_prunable:
        acts_fn, table = m.units, m.unit_prunable  # a stream or penultimate unit
    for drop in strengths:
        p, s, info = attacks.liu_fine_prune(
            m.apply, acts_fn, table, params, state, ctx.x_att, ctx.y_att, layer=layer,
            max_drop=drop, epochs=a.fine_prune_epochs, lr=a.ft_lr, **_data(ctx, key),
        )  # fmt: skip
        yield drop, p, s, {"pruned_fraction": info["pruned"] / info["channels"]}


def _quantize(ctx, params, state, key, strengths):
    for bits in strengths:
        yield bits, attacks.quantize(params, int(bits)), state, {}


def _noise(ctx, params, state, key, strengths):
    # One key for every sigma: the same noise direction, scaled, gives a smooth curve.
    for sigma in strengths:
        yield sigma, attacks.gaussian_noise(params, key, sigma), state, {}


def _distill(ctx, params, state, key, strengths):
    m = ctx.model
    for e in strengths:
        p, s = attacks.distill(m.apply, params, state, m.init, m.apply, ctx.x_att,
                               epochs=e, lr=ctx.cfg.attack.distill_lr, **_data(ctx, key))  # fmt: skip
        yield e, p, s, {}


def _overwrite(ctx, params, state, key, strengths):
    """The attacker embeds its own noise watermark by the partitioned method (Algorithm 1)."""
    cfg = ctx.cfg
    # A different key gives a different set: the attacker cannot know the owner's secret.
    mine = triggers.make_trigger_set(
        "noise", secret=f"attacker:{cfg.seed}", size=cfg.watermark.size,
        image_shape=ctx.x_att.shape[1:], num_classes=ctx.num_classes,
    )  # fmt: skip
    for e in strengths:
        settings = dataclasses.replace(ctx.embed_settings, epochs=e)
        p, s, _ = embed.partitioned_embed(
            ctx.model.apply, params, state, mine.images, mine.labels,
            layers_to_turn=list(cfg.embed.layers_to_turn), settings=settings,
            mean=ctx.mean, std=ctx.std, key=key, clean_images=ctx.x_att,
            clean_labels=ctx.y_att, clean_per_trigger=cfg.embed.clean_per_trigger,
        )  # fmt: skip
        own = verify.retention(ctx.labels_on(p, s, mine.images), mine.labels)
        yield e, p, s, {"attacker_retention": own}


def _ft(last_only: bool, reinit: bool) -> PointsFn:
    return functools.partial(_finetune, last_only=last_only, reinit=reinit)


# Every attack kind, in the order of attack.kinds' default. Append new kinds: the position
# seeds each kind's random key (jax.random.fold_in), so reordering changes every result.
KINDS: tuple[AttackKind, ...] = (
    # Panels in the Watermark-Robustness-Toolbox order: FTLL, FTAL, RTLL, RTAL.
    AttackKind("ftll", _ft(last_only=True, reinit=False), "epochs", "ft_epochs",
               "finetune", 0, "FTLL (fine-tune last layer)",
               axis="fine-tuning epochs", xscale="log2", short="FTLL"),
    AttackKind("ftal", _ft(last_only=False, reinit=False), "epochs", "ft_epochs",
               "finetune", 1, "FTAL (fine-tune all layers)",
               axis="fine-tuning epochs", xscale="log2", short="FTAL"),
    AttackKind("rtll", _ft(last_only=True, reinit=True), "epochs", "ft_epochs",
               "finetune", 2, "RTLL (re-init head, train it)",
               axis="fine-tuning epochs", xscale="log2", short="RTLL"),
    AttackKind("rtal", _ft(last_only=False, reinit=True), "epochs", "ft_epochs",
               "finetune", 3, "RTAL (re-init head, train all)",
               axis="fine-tuning epochs", xscale="log2", short="RTAL"),
    AttackKind("adaptive", _adaptive, "epochs", "ft_epochs",
               "finetune", 4, "Adaptive (Algorithm-1 unfreezing)",
               axis="fine-tuning epochs", xscale="log2", short="adaptive"),
    AttackKind("prune", _prune, "ratio", "prune_ratios",
               "pruning", 0, "Activation-frequency pruning",
               axis="pruning ratio (channels)", short="act.-freq. pruning"),
    AttackKind("magnitude", _magnitude, "ratio", "prune_ratios",
               "pruning", 2, "Magnitude pruning",
               axis="pruning ratio (weights)", short="magnitude pruning"),
    AttackKind("fine_prune", _fine_prune, "ratio", "fine_prune_ratios",
               "pruning", 1, "Fine-pruning",
               axis="pruning ratio (channels)", short="fine-pruning"),
    AttackKind("quantize", _quantize, "bits", "quant_bits",
               "other", 0, "Quantization", larger_is_stronger=False,
               axis="weight precision (bits)", xscale="discrete", short="quantization"),
    AttackKind("noise", _noise, "sigma", "noise_sigmas",
               "other", 1, "Gaussian weight noise",
               axis="noise σ (× tensor std)", short="weight noise"),
    AttackKind("distill", _distill, "epochs", "distill_epochs",
               "other", 2, "Distillation",
               axis="distillation epochs", xscale="log2", short="distillation"),
    AttackKind("overwrite", _overwrite, "epochs", "overwrite_epochs",
               "other", 3, "Overwriting",
               axis="overwriting epochs", xscale="log2", short="overwriting"),
    AttackKind("liu_fine_prune", _liu_fine_prune, "max_drop", "liu_max_drop",
               "pruning", 3, "Fine-pruning (Liu et al.)",
               axis="accuracy-drop threshold", xscale="discrete", short="Liu fine-pruning"),
)  # fmt: skip
REGISTRY: dict[str, AttackKind] = {k.name: k for k in KINDS}
NAMES: tuple[str, ...] = tuple(REGISTRY)  # tests/test_attack_registry.py: unique, fields exist


def get(name: str) -> AttackKind:
    """The registry entry of attack kind ``name``.

    Args:
      name: An attack kind.

    Returns:
      Its :class:`AttackKind`.

    Raises:
      ConfigError: when no such kind is registered.
    """
    if name not in REGISTRY:
        raise ConfigError(f"unknown attack kind {name!r}; known: {NAMES}")
    return REGISTRY[name]


def in_group(group: str) -> tuple[str, ...]:
    """The kinds drawn in figure ``group``, in panel order.

    Args:
      group: A group name (``finetune``, ``pruning``, ``other``).

    Returns:
      Their names; empty for an unknown group.
    """
    return tuple(k.name for k in sorted(KINDS, key=lambda k: k.panel) if k.group == group)


# A strengths field left empty takes another's values: fine_prune follows prune unless a study
# wants fewer of its costlier points (each prunes, then fine-tunes).
FALLBACK_STRENGTHS = {"fine_prune_ratios": "prune_ratios"}


def strengths(kind: AttackKind, cfg: ml_collections.ConfigDict) -> list[float]:
    """The distinct strengths of ``kind`` in ``cfg``, in increasing order.

    Args:
      kind: A registry entry.
      cfg: The run's config (its ``attack.<kind.strengths>`` field).

    Returns:
      The sorted distinct values.
    """
    values = cfg.attack[kind.strengths]
    if not values and kind.strengths in FALLBACK_STRENGTHS:
        values = cfg.attack[FALLBACK_STRENGTHS[kind.strengths]]
    return sorted(set(values))
