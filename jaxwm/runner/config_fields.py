"""Every config field, declared once: its default, what it means, and the check its value must pass.

:func:`jaxwm.runner.config.defaults` builds the :class:`ml_collections.ConfigDict` from
:data:`FIELDS` (in this order) and :func:`jaxwm.runner.config.validate` runs each field's
:class:`Check`, so a new field is one :class:`Field` line in its section below. The type of a
field is the type of its default (tuples: the types of their elements).

Example:
    >>> Field("train.epochs", 10, "passes over the training set", POSITIVE).check.want
    '> 0'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from jaxwm import attacks
from jaxwm.embed import OPERATING_POINTS
from jaxwm.engine.hparams import BN_MODES
from jaxwm.runner import attack_registry

MODES = ("train", "sweep", "embed", "digest", "export", "verify", "pipeline", "attack",
         "reproduce", "study")  # fmt: skip
METHODS = ("partitioned", "baseline", "adi")


@dataclasses.dataclass(frozen=True)
class Check:
    """A condition on a field's value.

    Attributes:
      test: True for a valid value (already of the default's type).
      want: What a valid value is, as the error message says it ("must be <want>").
    """

    test: Callable[[Any], bool]
    want: str


@dataclasses.dataclass(frozen=True)
class Field:
    """One config field.

    Attributes:
      name: Dotted name, ``section.field`` (or ``field`` at the top level).
      default: Its value in :func:`jaxwm.runner.config.defaults`; also fixes its type.
      doc: What it means.
      check: The condition its value must pass, if any beyond the type.
    """

    name: str
    default: Any
    doc: str
    check: Check | None = None


def one_of(*choices: str) -> Check:
    """A value among ``choices``, written ``a|b|c`` in the error message."""
    return Check(lambda v: v in choices, "|".join(choices))


def tuple_of(test: Callable[[Any], bool], want: str, nonempty: bool = True) -> Check:
    """A tuple whose every element passes ``test`` (and that has one, when ``nonempty``)."""
    return Check(lambda v: (len(v) > 0 or not nonempty) and all(test(x) for x in v), want)


# Marks embed.clean_per_trigger / embed.target_retention as "the operating point's value".
FROM_POINT = -1.0
# Removed fields: what replaces them (validate names it instead of "unknown field").
RENAMED = {"embed.freeze_bn_stats": "embed.bn_mode (True -> inference, False -> trainable)"}
POSITIVE = Check(lambda v: v > 0, "> 0")
NONNEG = Check(lambda v: v >= 0, ">= 0")
UNIT_OPEN = Check(lambda v: 0 < v < 1, "in (0, 1)")
UNIT_RIGHT_OPEN = Check(lambda v: 0 <= v < 1, "in [0, 1)")
# Distinct: a repeated seed names the same run directory twice (with study.workers, two
# processes writing one unit directory at once).
SEEDS = Check(lambda v: len(v) > 0 and len(set(v)) == len(v), "a non-empty tuple of distinct seeds")
SOME_METHODS = tuple_of(lambda m: m in METHODS, "a non-empty tuple of " + "|".join(METHODS))

F = Field  # short: the table below is one call per field
FIELDS: tuple[Field, ...] = (
    F("mode", "train", "the job to run (jaxwm.runner.modes)",
      Check(lambda v: v in MODES, f"one of {MODES}")),
    F("seed", 0, "seed of the victim's initialisation, data order and attacks"),
    F("progress", True, "per-epoch progress on stderr: a bar on a terminal, plain lines otherwise"),
    F("tensorboard", False, "also write training metrics (learning rate included) as TensorBoard "
      "events to <run>/tensorboard; needs pip install 'jaxwm[tensorboard]'"),
    F("restart", False, "a run directory holding a run made with other fields (runner/fingerprint.py) "
      "is refused; True moves that run aside (<workdir>/replaced/<time>/) and starts afresh"),
    # JAX's persistent compilation cache: a second run of the same config skips XLA compilation.
    F("compile_cache", "~/.cache/jaxwm/xla", "JAX's persistent compilation cache; '' disables"),
    F("compile_cache_min_s", 1.0, "cache only compilations at least this long (0 = all)", NONNEG),

    F("data.source", "digits",
      "digits | synthetic[:k=v,...] | folder:<dir or tar> | tfds:<name> (jaxwm.data.sources)"),
    F("data.cache_dir", "", "dataset cache; '' = $JAXWM_CACHE_DIR or ~/.cache/jaxwm"),
    F("data.tfds_data_dir", "", "tensorflow-datasets data_dir; '' = its default"),

    F("model.stage_sizes", (2, 2, 2, 2), "residual blocks per stage (2,2,2,2 = ResNet18)",
      tuple_of(lambda x: x > 0, "positive block counts")),
    F("model.widths", (64, 128, 256, 512), "channels per stage, as many as stage_sizes",
      tuple_of(lambda x: x > 0, "positive channel counts")),
    F("model.dtype", "float32", "compute dtype; bfloat16 on GPU/TPU: bf16 compute, fp32 params",
      one_of("float32", "bfloat16", "float16")),

    F("train.epochs", 10, "passes over the training set", POSITIVE),
    F("train.batch_size", 128, "images per step", POSITIVE),
    F("train.peak_lr", 0.1, "learning rate after warmup", POSITIVE),
    F("train.warmup_epochs", 1.0, "linear warmup from 0 to peak_lr", NONNEG),
    F("train.schedule", "cosine", "decay after warmup", one_of("cosine", "linear", "constant")),
    F("train.optimizer", "sgd", "sgd (Nesterov) | adamw", one_of("sgd", "adamw")),
    F("train.momentum", 0.9, "SGD momentum", UNIT_RIGHT_OPEN),
    F("train.nesterov", True, "Nesterov momentum for sgd"),
    F("train.weight_decay", 5e-4, "L2 weight decay", NONNEG),
    F("train.label_smoothing", 0.0, "label smoothing of the cross-entropy", UNIT_RIGHT_OPEN),
    F("train.crop_pad", 4, "random-crop padding in pixels; 0 disables", NONNEG),
    F("train.flip", True, "random horizontal flips (off for digits)"),
    F("train.steps_per_call", 0, "steps per jitted call; 0 = one call per epoch",
      Check(lambda v: v >= 0, ">= 0 (0 = whole epoch)")),
    F("train.eval_every", 1, "evaluate every this many epochs; 0 = only at the end", NONNEG),
    F("train.checkpoint_every", 1, "checkpoint every this many epochs", POSITIVE),

    # The owner's watermark set D (see jaxwm.triggers). The secret is never written to disk;
    # leave it empty and set the JAXWM_SECRET environment variable to keep it off the command line.
    F("watermark.kind", "noise", "trigger images (jaxwm.triggers)",
      one_of("noise", "content", "unrelated", "folder")),
    F("watermark.secret", "", "the owner's key; '' = $JAXWM_SECRET (never written to disk)"),
    F("watermark.size", 100, "triggers in the set", POSITIVE),
    F("watermark.label_policy", "random", "trigger labels", one_of("random", "target")),
    F("watermark.target_class", 0, "the label of every trigger when label_policy=target", NONNEG),
    F("watermark.source", "", "dataset source of the images for unrelated/folder kinds"),

    # Embedding (see jaxwm.embed): Algorithm 1 ("partitioned") or full fine-tuning ("baseline").
    F("embed.method", "partitioned", "Algorithm 1 or full fine-tuning (mode=embed)",
      one_of("partitioned", "baseline")),
    F("embed.victim", "", "run directory of the model to watermark (mode=embed)"),
    F("embed.layers_to_turn", ("layer3", "layer4", "head"),
      "path patterns in network order; the last unfreezes first",
      Check(lambda v: len(v) > 0, "a non-empty tuple of path patterns")),
    F("embed.more_sets", (), "extra watermark sets: 'pattern,pattern' layer groups",
      tuple_of(lambda x: isinstance(x, str) and x, "a tuple of 'pattern,pattern' strings", nonempty=False)),
    F("embed.epochs", 30, "epochs over the watermark set", POSITIVE),
    F("embed.lr", 1e-3, "learning rate", POSITIVE),
    F("embed.batch_size", 64, "images per step", POSITIVE),
    F("embed.optimizer", "adamw", "sgd | adamw", one_of("sgd", "adamw")),
    F("embed.weight_decay", 0.0, "weight decay", NONNEG),
    # What "train on D" means (jaxwm.embed.OPERATING_POINTS; README "Design decisions").
    # matched is the default because it is the one measured to keep clean accuracy (0.5-2.2
    # points lost on MNIST, where paper_literal lost >= 24.9); custom: the two fields below as
    # given. A named point fills those fields; a value typed there that contradicts it is an
    # error naming both (config.resolve_operating_point), so nothing typed is ignored.
    F("embed.operating_point", "matched", "which reading of 'train on D'",
      one_of(*OPERATING_POINTS, "custom")),
    F("embed.clean_per_trigger", FROM_POINT, "clean images mixed in per trigger (0: D alone); "
      "-1: the operating point's", Check(lambda v: v == FROM_POINT or v >= 0, ">= 0 or -1")),
    F("embed.target_retention", FROM_POINT, "stop early at this retention on D (0: run all "
      "epochs); -1: the operating point's",
      Check(lambda v: v == FROM_POINT or 0 <= v <= 1, "in [0, 1] or -1")),
    F("embed.bn_mode", "inference", "BatchNorm while embedding: inference (all layers, "
      "statistics fixed) | trainable (batch statistics in trainable layers) | all (PyTorch's "
      "train(): every layer, frozen ones too)", one_of(*BN_MODES)),
    F("embed.adi_repeat", 10, "pipeline method adi: copies of D mixed into the training data",
      POSITIVE),

    # Ownership verification (see jaxwm.verify). The suspect: exactly one of model (white-box
    # run directory), answers (a file of its answers to the queries of mode=export) or endpoint
    # (a live HTTP prediction API).
    F("verify.model", "", "white-box suspect: its run directory"),
    F("verify.answers", "", ".csv/.json/.npy of labels or logits, in the export's query order"),
    F("verify.endpoint", "", "http(s) URL taking one PNG per POST, answering a label or logits"),
    F("verify.timeout", 10.0, "seconds per endpoint request",
      Check(lambda v: v > 0, "> 0 (seconds)")),
    F("verify.retries", 3, "endpoint retries on timeouts, 429 and 5xx", NONNEG),
    F("verify.rate_limit", 0.0, "endpoint requests per second; 0 = unlimited",
      Check(lambda v: v >= 0, ">= 0 (requests per second; 0 = unlimited)")),
    F("verify.manifest", "", "the owner's manifest.json, or a directory of manifest*.json"),
    F("verify.digest", "", "the digest the owner published before release (mode=digest)"),
    F("verify.nulls", (), "run directories of independent non-watermarked models",
      tuple_of(lambda x: isinstance(x, str) and x, "a tuple of run directories", nonempty=False)),
    F("verify.null_models", 0, "pipeline: train this many extra independent models", NONNEG),
    F("verify.alpha", 1e-3, "significance level when the digest was published before release",
      UNIT_OPEN),
    # Without a published digest a claimant could have tried many keys against the suspect:
    # this much stricter level then applies (a search of 1e9 keys still fails at 1e-3).
    F("verify.alpha_unpublished", 1e-12, "significance level without a published digest",
      UNIT_OPEN),
    F("verify.fpr", 0.05, "null-model threshold: false-positive rate ...", UNIT_OPEN),
    F("verify.confidence", 0.95, "... bounded with this confidence", UNIT_OPEN),

    F("pipeline.methods", ("partitioned", "baseline"),
      "embedding methods; also adi: trained with D from the start", SOME_METHODS),
    F("pipeline.victim", "", "run directory of a trained victim to reuse; '' = <workdir>/victim"),

    # Independent victim runs trained at once (mode=sweep, jaxwm.engine.sweep): seeds x peak lrs,
    # stacked on a run axis and vmapped; the run axis is sharded over devices when several.
    F("sweep.seeds", (0, 1, 2, 3), "seeds of the runs", SEEDS),
    F("sweep.lrs", (), "peak learning rates; () = train.peak_lr only",
      tuple_of(lambda x: x > 0, "a tuple of positive learning rates", nonempty=False)),

    # The whole study (mode=reproduce, jaxwm.runner.report).
    F("reproduce.runs", ("mnist=tfds:mnist", "cifar10=tfds:cifar10", "cifar100=tfds:cifar100"),
      "NAME=SOURCE: NAME is a preset (mnist, cifar10, cifar100) or, with presets=False, a label "
      "for this config's own fields",
      tuple_of(lambda x: "=" in x, "a non-empty tuple of 'NAME=SOURCE'")),
    F("reproduce.seeds", (0,), "seeds of each dataset's runs", SEEDS),
    F("reproduce.attacks", True, "run mode attack on every pipeline"),
    F("reproduce.presets", True, "use the paper-scale preset of each NAME"),
    F("reproduce.processes", 1,
      "1 = every (dataset, seed) in this process; N > 1 = N processes at a time, each pinned to "
      "one GPU (jaxwm.runner.procpool); 0 = one process per local device",
      Check(lambda v: v >= 0, ">= 0 (0 = one per local device)")),

    # The deciding study (mode=study, jaxwm.runner.study): every cell at every victim seed and
    # watermark key, both methods from the same victim with the same key, then the attacks.
    # A cell is 'NAME: field=value; field=value' (dotted fields of this config, Python literals),
    # so fields added later can appear in a cell without code changes.
    F("study.cells", (
        "d_alone: embed.operating_point='paper_literal'",
        "mixed_2: embed.operating_point='mixed'",
        "mixed_10: embed.operating_point='mixed'; embed.clean_per_trigger=10",
        "early_stop_0.85: embed.operating_point='matched'",
        "bn_trainable: embed.operating_point='matched'; embed.bn_mode='trainable'",
        "bn_all: embed.operating_point='matched'; embed.bn_mode='all'",
        "large_d: embed.operating_point='matched'; watermark.size=1000",
        "content_target: embed.operating_point='matched'; watermark.kind='content'; "
        "watermark.label_policy='target'",
      ), "cells 'NAME: field=value; ...' (NAME: letters, digits, _ . -)",
      tuple_of(lambda c: isinstance(c, str) and ":" in c,
               "a non-empty tuple of 'NAME: field=value; field=value' strings")),
    F("study.seeds", (0, 1, 2), "victim seeds (one victim per seed, shared by every cell)", SEEDS),
    F("study.num_keys", 3, "watermark keys per victim, derived from the owner's secret", POSITIVE),
    F("study.attack_kinds", ("ftll", "ftal", "rtll", "rtal", "prune", "fine_prune"),
      "attacks run on every unit that keeps accuracy; () = none",
      tuple_of(lambda k: k in attack_registry.NAMES,
               f"a tuple of {'|'.join(attack_registry.NAMES)}", nonempty=False)),
    F("study.attack_cells", ("early_stop_0.85",), "cells whose units are attacked (each only "
      "when it keeps accuracy, see study.attack_max_drop); ('*',) = every cell. Attacks cost "
      "more than embedding, and only the verdict cell's decide C2 and C3",
      tuple_of(lambda c: isinstance(c, str) and c != "", "a tuple of cell names or ('*',)",
               nonempty=False)),
    F("study.attack_max_drop", 0.05, "attack a unit only when its partitioned model lost at most "
      "this clean accuracy against the victim (a fraction)", Check(lambda v: 0 <= v <= 1, "in [0, 1]")),
    F("study.verdict_cell", "early_stop_0.85", "the cell at the paper's retention: C1-C4 are "
      "decided on its units"),
    F("study.c1_max_drop", 0.01, "C1: allowed clean-accuracy drop (fraction)", UNIT_RIGHT_OPEN),
    F("study.c3_retention", 0.6, "C3: retention that must hold ...", UNIT_OPEN),
    F("study.c3_acc_drop", 0.10, "... until clean accuracy dropped by more than this", UNIT_OPEN),
    F("study.paper_retention", 0.85, "C1 and C4 are decided only when the verdict cell's mean "
      "retention is within study.retention_tolerance of this (C1) and the methods' of each other "
      "(C4)", UNIT_OPEN),
    F("study.retention_tolerance", 0.05, "see study.paper_retention (a fraction)", UNIT_OPEN),
    F("study.alpha", 0.05, "level of the paired tests behind C2-C4", UNIT_OPEN),
    F("study.plots", True, "draw study_cells and study_attacks (PDF and PNG)"),
    F("study.report_only", False, "run no unit and train no victim: write STUDY.md from the "
      "units of this grid already in units.jsonl (after a time-boxed or interrupted run)"),
    F("study.workers", 1, "processes the units run in: 1 = one after the other in this "
      "process; N > 1 = N worker processes at a time, after this process trained every victim "
      "(each unit's output then goes to its own log.txt). Results are the same; not in a unit's "
      "fingerprint, so a rerun with another N reuses the finished units",
      Check(lambda v: v >= 1, ">= 1")),

    # Removal attacks on a finished pipeline run (mode=attack, jaxwm.runner.attack_runs). Each
    # kind's strengths field is named by its entry in jaxwm.runner.attack_registry. Strength lists
    # are tuples so they can be overridden on the command line: --config.attack.ft_epochs=(0,2)
    F("attack.source", "", "pipeline run directory (victim/, partitioned/, baseline/, watermark/)"),
    F("attack.schemes", ("partitioned", "baseline"), "watermarked models to attack", SOME_METHODS),
    F("attack.kinds", attack_registry.NAMES, "attack kinds (jaxwm.runner.attack_registry)",
      tuple_of(lambda k: k in attack_registry.NAMES,
                f"a non-empty tuple of {'|'.join(attack_registry.NAMES)}")),
    F("attack.data_split", "test",
      "where the attacker's data comes from: test (a share of the test set; the rest "
      "evaluates) | train (a share of the training set; the whole test set evaluates)",
      one_of("test", "train")),
    F("attack.data_fraction", 0.5,
      "share of attack.data_split given to the attacker (test: the rest evaluates; train: 1 "
      "gives the whole training set)", Check(lambda v: 0 < v <= 1, "in (0, 1]")),
    F("attack.eval_images", 0,
      "images clean accuracy is measured on at every attack point: 0 = the whole evaluation "
      "share; n > 0 = a fixed random n of it (a study's cost is mostly this evaluation)",
      NONNEG),
    F("attack.batch_size", 64, "attacker's images per step", POSITIVE),
    F("attack.ft_epochs", (0, 1, 2, 4, 8), "ftll/ftal/rtll/rtal/adaptive strengths (epochs)",
      tuple_of(lambda x: x >= 0, "a non-empty tuple of epochs >= 0")),
    F("attack.ft_lr", 0.01, "fine-tuning learning rate (also fine_prune's)", POSITIVE),
    F("attack.prune_ratios", (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
      "ratios of prune (activation frequency), magnitude and (unless attack.fine_prune_ratios "
      "is set) fine_prune",
      tuple_of(lambda x: 0 <= x <= 1, "a non-empty tuple of ratios in [0, 1]")),
    F("attack.fine_prune_ratios", (),
      "fine_prune's ratios; empty: attack.prune_ratios",
      tuple_of(lambda x: 0 <= x <= 1, "a tuple of ratios in [0, 1]", nonempty=False)),
    F("attack.fine_prune_epochs", 2,
      "fine-tuning epochs after fine_prune's and liu_fine_prune's pruning", NONNEG),
    F("attack.prune_scope", "block",
      "units prune/fine_prune remove: block (block-internal) | all (also residual stream and "
      "stem) | penultimate (the head's input features)", one_of(*attacks.SCOPES)),
    F("attack.prune_ranking", "global",
      "prune/fine_prune ranking: global (one over all units) | layer (the ratio in each layer)",
      one_of(*attacks.RANKINGS)),
    F("attack.liu_max_drop", (0.04,),
      "liu_fine_prune strengths: clean-accuracy drop (fraction) that stops its pruning",
      tuple_of(lambda x: 0 <= x <= 1, "a non-empty tuple of fractions in [0, 1]")),
    F("attack.liu_layer", "",
      "liu_fine_prune's layer: a unit of the model's table ('' = the last block-internal one)"),
    F("attack.quant_bits", (8, 6, 4), "quantize strengths (bits; fewer = stronger)",
      tuple_of(lambda x: 2 <= x <= 16, "a non-empty tuple of bit widths in [2, 16]")),
    F("attack.noise_sigmas", (0.0, 0.05, 0.1, 0.2, 0.5), "multiples of each layer's weight std",
      tuple_of(lambda x: x >= 0, "a non-empty tuple of sigmas >= 0")),
    F("attack.distill_epochs", (5, 10), "distill strengths (epochs)",
      tuple_of(lambda x: x > 0, "a non-empty tuple of epochs > 0")),
    F("attack.distill_lr", 0.05, "distillation learning rate", POSITIVE),
    F("attack.overwrite_epochs", (10, 30), "epochs of the attacker's own partitioned embedding",
      tuple_of(lambda x: x > 0, "a non-empty tuple of epochs > 0")),
    F("attack.max_acc_drop", 0.05, "WRT: success needs at most this clean-accuracy loss",
      Check(lambda v: 0 <= v <= 1, "in [0, 1] (a fraction: 0.05 = 5 points)")),
    F("attack.plots", True, "draw the figures of jaxwm.runner.plots"),
    F("attack.save_models", False,
      "save each attacked model to <workdir>/attacked/<scheme>/<kind>/<strength>/"),
    F("attack.figure_widths", ("double", "single"),
      "widths drawn, each as PDF and PNG: double (7 in, <name>.pdf) and single (3.4 in, "
      "<name>_single.pdf) column", tuple_of(lambda w: w in ("double", "single"),
                                             "a non-empty tuple of double|single")),
)  # fmt: skip
