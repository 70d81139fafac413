"""Config-driven watermark runs: modes ``embed``, ``verify`` and ``pipeline``.

``pipeline`` is the paper's Table 1 experiment in one command: train (or resume) the victim,
train optional independent null models, derive the owner's watermark set(s) from the secret,
embed them with each method from the same victim, verify every model, and write
``results.json`` and ``table1.md`` (our figures beside the paper's) in the run directory.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxwm import controls, data, embed, triggers, verify
from jaxwm.engine import checkpoint, loop, train
from jaxwm.engine.hparams import Hparams
from jaxwm.errors import CheckpointError, ConfigError
from jaxwm.manifest import publication_digest, write_manifest
from jaxwm.runner import config, experiments, fingerprint, tensorboard

# Lyu & Xian 2026, Table 1: clean accuracy % / watermark retention %.
PAPER_TABLE1 = {
    "mnist": {"victim": 99.59, "partitioned": (99.47, 86.67), "baseline": (99.03, 87.83)},
    "cifar10": {"victim": 87.48, "partitioned": (86.54, 83.41), "baseline": (85.74, 87.16)},
    "cifar100": {"victim": 74.34, "partitioned": (72.83, 25.07), "baseline": (54.12, 25.74)},
}


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def trigger_sources(
    cfg: ml_collections.ConfigDict, ds: data.Dataset
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Source images/labels a trigger kind draws from (None for ``noise``)."""
    kind = cfg.watermark.kind
    if kind == "noise":
        return None, None
    if kind == "content":
        return ds.train_images, ds.train_labels
    if not cfg.watermark.source:
        raise ConfigError(
            f"watermark.kind={kind!r} needs watermark.source (a dataset source such as "
            "'folder:/path/fashion.tar.gz' or 'tfds:fashion_mnist')"
        )
    src = data.load_dataset(cfg.watermark.source, cache_dir=cfg.data.cache_dir or None)
    return src.train_images, src.train_labels


def make_sets(cfg: ml_collections.ConfigDict, ds: data.Dataset) -> list[tuple[Any, list[str]]]:
    """The owner's watermark sets and the layer patterns each is embedded into."""
    key = config.secret(cfg, embedding=True)
    images, labels = trigger_sources(cfg, ds)
    groups = [list(cfg.embed.layers_to_turn)]
    groups += [[p.strip() for p in g.split(",") if p.strip()] for g in cfg.embed.more_sets]
    sets = []
    for index, layers in enumerate(groups):
        trig = triggers.make_trigger_set(
            cfg.watermark.kind,
            secret=key,
            size=cfg.watermark.size,
            image_shape=ds.image_shape,
            num_classes=ds.num_classes,
            label_policy=cfg.watermark.label_policy,
            target_class=cfg.watermark.target_class,
            source_images=images,
            source_labels=labels,
            index=index,
        )
        sets.append((trig, layers))
    return sets


def embed_settings(cfg: ml_collections.ConfigDict) -> Hparams:
    """``cfg.embed`` as embedding's :class:`jaxwm.engine.hparams.Hparams` (see ``embed.DEFAULTS``)."""
    e = cfg.embed
    return embed.hparams(
        epochs=e.epochs,
        peak_lr=e.lr,
        batch_size=e.batch_size,
        optimizer=e.optimizer,
        weight_decay=e.weight_decay,
        bn_mode=e.bn_mode,
    )


def _embed_event(write, index: int, lr: float, row: dict, params, state) -> None:
    """``embed.embed``'s ``on_epoch``: the row, its (constant) rate and stage count, to events."""
    del params, state
    write(index, {**row, "lr": lr, "stages": len(row["trainable"])})


def embed_model(cfg, method, model, params, state, ds, sets, seed,
                events_dir: Path | None = None) -> tuple[Any, Any, list]:  # fmt: skip
    """Embeds every watermark set with ``method``, in order.

    ``partitioned`` and ``baseline`` start from the victim; ``adi`` trains a fresh model from
    scratch on the clean data with the triggers mixed in (Adi et al. 2018), as a reference.
    With ``cfg.tensorboard``, each embedding epoch is written as TensorBoard scalars under
    ``events_dir`` (:func:`jaxwm.runner.tensorboard.embed_writer`).
    """
    if method == "adi":
        x, y = embed.with_triggers(
            ds.train_images, ds.train_labels, [(t.images, t.labels) for t, _ in sets],
            cfg.embed.adi_repeat,
        )  # fmt: skip
        res = loop.fit(
            model.init, model.apply, dataclasses.replace(ds, train_images=x, train_labels=y),
            experiments.hparams(cfg.train),
            seed=seed + 500, progress=cfg.progress, desc="adi",
        )  # fmt: skip
        _say(f"adi: trained from scratch with the triggers mixed in ({res.wall_s:.1f} s)")
        return res.state.params, res.state.state, [res.history]
    settings = embed_settings(cfg)
    histories = []
    enabled = bool(cfg.tensorboard) and events_dir is not None
    for i, (trig, layers) in enumerate(sets):
        t0 = time.perf_counter()
        with tensorboard.embed_writer(events_dir or Path("."), enabled=enabled) as write:
            on_epoch = None
            if write is not None:
                on_epoch = functools.partial(_embed_event, write, i, settings.peak_lr)
            params, state, hist = embed.embed(
                model.apply, params, state, trig.images, trig.labels,
                layers_to_turn=layers if method == "partitioned" else None,  # None: baseline
                settings=settings, mean=ds.mean, std=ds.std,
                key=jax.random.fold_in(jax.random.key(seed), 1000 + i),
                clean_images=ds.train_images, clean_labels=ds.train_labels,
                clean_per_trigger=cfg.embed.clean_per_trigger,
                target_retention=cfg.embed.target_retention, on_epoch=on_epoch,
            )  # fmt: skip
        _say(
            f"{method} set {i}: retention {hist[-1]['retention']:.3f} after {len(hist)} epochs "
            f"({time.perf_counter() - t0:.1f} s)"
        )
        histories.append(hist)
    return params, state, histories


def make_controls(cfg: ml_collections.ConfigDict, ds: data.Dataset, sets) -> list[list]:
    """Control sets (fresh keys, same generator) for each of the owner's sets."""
    key = config.secret(cfg)
    images, labels = trigger_sources(cfg, ds)
    return [
        controls.control_sets(
            trig.params, key, count=controls.control_count(trig.kind, cfg.verify.alpha),
            source_images=images, source_labels=labels,
        )
        for trig, _ in sets
    ]  # fmt: skip


def evaluate_model(model, params, state, ds, sets, ctl, vcfg, nulls=None,
                   accuracy: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Clean test accuracy, and retention + verdict per watermark set (Holm over the sets).

    The owner made the sets in this run before embedding, so the commitment is prior by
    construction and verdicts use ``verify.alpha``. ``accuracy``: the model's test accuracy
    when already measured (:func:`victim_accuracy_key`), else it is measured here.
    """
    if accuracy is None:
        evaluate = train.make_eval(model.apply, ds.mean, ds.std)
        accuracy = float(evaluate(params, state, ds.test_images, ds.test_labels))
    predict = train.make_predict(model.apply, ds.mean, ds.std)

    def labels_of(images):
        return verify.predict_labels(lambda x: predict(params, state, x), images)

    verdicts = []
    for i, (trig, _) in enumerate(sets):
        null_i = None if nulls is None else [n[i] for n in nulls]
        pred = labels_of(trig.images)
        c_pred = c_lab = None
        clustered = controls.clustered(trig.kind)
        if ctl[i]:  # a rank test stops predicting once it cannot reject (same verdict)
            c_pred, c_lab = verify.predict_controls(
                labels_of, [c.images for c in ctl[i]], [c.labels for c in ctl[i]],
                int(np.sum(pred == trig.labels)), alpha=vcfg.alpha, clustered=clustered,
            )  # fmt: skip
        verdicts.append(verify.verify_predictions(
            pred, trig.labels, ds.num_classes, alpha=vcfg.alpha,
            chance=triggers.chance_level(trig.params), control_predicted=c_pred,
            control_labels=c_lab, control_clustered=clustered,
            control_sets_planned=len(ctl[i]), null_retentions=null_i, fpr=vcfg.fpr,
            confidence=vcfg.confidence,
        ))  # fmt: skip
    owned, verdicts, _ = verify.decide_sets(verdicts, vcfg.alpha)
    return {"test_accuracy": accuracy, "owned": owned, "sets": [v.to_dict() for v in verdicts]}


# Test accuracy of the victims this process has evaluated: a study's 72 units share 3 victims,
# and each unit evaluated its victim on the 10,000 test images again (3 of a ~30 s unit).
# Hashing the weights costs ~0.1 s for ResNet18 on CPU, far less than that evaluation.
_VICTIM_ACCURACY: dict[tuple, float] = {}


def victim_accuracy_key(params, state, model, ds: data.Dataset) -> tuple:
    """What a victim's test accuracy depends on: its weights, the model and the test split.

    A digest of the parameters and state actually evaluated (a retrained or replaced checkpoint
    never reuses an entry), the model's name (architecture and dtype), the normalisation, and a
    digest of the test images and labels.
    """
    h = hashlib.blake2b(digest_size=16)
    leaves = [
        *jax.tree_util.tree_leaves_with_path(params),
        *jax.tree_util.tree_leaves_with_path(state),
    ]
    for path, leaf in leaves:
        a = np.ascontiguousarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}{a.dtype}{a.shape}".encode())
        h.update(a.data)
    test_split = triggers.source_digest(ds.test_images, ds.test_labels)
    return (model.name, tuple(ds.mean), tuple(ds.std), h.hexdigest(), test_split)


def write_manifests(directory: Path, sets, dataset: str) -> str:
    """The run's manifests and the digest to publish before release (``DIGEST.txt``)."""
    written = [
        write_manifest(directory / f"manifest{i}.json", trig,
                       extra={"layers_to_turn": layers, "dataset": dataset})
        for i, (trig, layers) in enumerate(sets)
    ]  # fmt: skip
    digest = publication_digest(written)
    (directory / "DIGEST.txt").write_text(digest + "\n")
    _say(f"watermark digest (publish it before releasing the model): {digest}")
    return digest


def load_model_for(path: str | Path, num_classes: int | None = None, channels: int | None = None):
    """Loads a saved run's model and rebuilds its pure functions from the saved config.

    Args:
      path: A run directory (or its ``model`` directory).
      num_classes: The class count the caller's data has; None takes the model's own.
      channels: The image channels the caller will feed it; None skips that check.

    Raises:
      CheckpointError: One line naming ``path`` when the model was made for another class
        count, or its arrays do not fit the architecture its ``meta.json`` records.
    """
    params, state, meta = checkpoint.load_model(path)
    cfg = ml_collections.ConfigDict(meta["config"])
    saved_k = len(meta["dataset"]["class_names"])
    if num_classes is not None and num_classes != saved_k:
        raise CheckpointError(
            f"the model in {path} was trained for num_classes {saved_k} -> this run's data has "
            f"{num_classes} (data.source {meta['dataset'].get('source')!r}); use that model's "
            "data.source or a model trained on this data"
        )
    saved_c = len(meta["normalization"]["mean"])
    if channels is not None and channels != saved_c:
        raise CheckpointError(
            f"the model in {path} takes {saved_c}-channel images but this run's images have "
            f"{channels} channels (data.source {meta['dataset'].get('source')!r} made it); use a "
            "model trained on images like these"
        )
    model = experiments.build_model(cfg, saved_k)
    check_fits(
        model, params, state, saved_c, f"the model in {path}", _arch(meta["config"], saved_k)
    )
    return model, params, state, meta


def _arch(cfg: dict, num_classes: int) -> dict[str, Any]:
    m = cfg.get("model", {})
    return {"model.widths": tuple(m.get("widths", ())), "num_classes": num_classes,
            "model.stage_sizes": tuple(m.get("stage_sizes", ()))}  # fmt: skip


def check_fits(model, params, state, channels: int, label: str, expected: dict[str, Any],
               saved: dict[str, Any] | None = None) -> None:  # fmt: skip
    """Raises one line if ``params``/``state`` do not have the shapes ``model`` initialises.

    Args:
      model: The model the arrays are meant for.
      params, state: Loaded arrays.
      channels: Image channels of the data (the stem's input width).
      label: How the message names the arrays' origin.
      expected: The architecture fields ``model`` was built from (named in the message).
      saved: The fields the arrays were saved with, when known: the message lists those
        that differ from ``expected``.

    Raises:
      CheckpointError: naming ``label``, the differing fields and the first mismatched leaf.
    """
    # Parameter shapes depend on the channels, not the image size (global pooling).
    sample = jax.ShapeDtypeStruct((1, 8, 8, channels), np.float32)
    want = jax.eval_shape(model.init, jax.random.key(0), sample)
    got = jax.tree.map(lambda x: tuple(np.shape(x)), (params, state))
    want_shapes = jax.tree.map(lambda x: tuple(x.shape), want)
    if got == want_shapes:
        return
    flat_got = dict(jax.tree_util.tree_flatten_with_path(got, is_leaf=_is_shape)[0])
    flat_want = dict(jax.tree_util.tree_flatten_with_path(want_shapes, is_leaf=_is_shape)[0])
    first = next(
        (f"{jax.tree_util.keystr(k)} {flat_got.get(k)} vs {flat_want.get(k)}"
         for k in sorted(set(flat_got) | set(flat_want), key=str)
         if flat_got.get(k) != flat_want.get(k)), "the tree structure",
    )  # fmt: skip
    diff = fingerprint.differences(saved, expected) if saved else []
    fields = "; ".join(diff) if diff else ", ".join(f"{k} {v!r}" for k, v in expected.items())
    raise CheckpointError(
        f"{label} does not fit this architecture ({fields}); first difference {first}; use a "
        "model trained with this config's model.* fields and data, or change them to match"
    )


def _is_shape(x) -> bool:
    return isinstance(x, tuple) and all(isinstance(i, int) for i in x)


def run_pipeline(cfg: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Mode ``pipeline``: victim -> watermark sets -> embed per method -> verify -> Table 1."""
    t0 = time.perf_counter()
    config.secret(cfg, embedding=True)  # fail before training if there is no usable key
    tensorboard.check_available(cfg.tensorboard)
    ds = experiments.load_data(cfg)
    model = experiments.build_model(cfg, ds.num_classes)
    victim = _trained(cfg, Path(cfg.pipeline.victim or workdir / "victim"), cfg.seed, "victim",
                      model, ds, given=bool(cfg.pipeline.victim))  # fmt: skip
    nulls = [_trained(cfg, workdir / f"null{i}", cfg.seed + 1 + i, f"null model {i + 1}", model, ds)
             for i in range(cfg.verify.null_models)]  # fmt: skip

    sets = make_sets(cfg, ds)
    digest = write_manifests(workdir / "watermark", sets, ds.name)
    ctl = make_controls(cfg, ds, sets)
    # Independent models' retentions (the victim is one too: trained without the watermark).
    # The victim is evaluated once: its verdict is reported and its retentions are a null. Its
    # test accuracy is measured once per process (a study's units share the victim).
    acc_key = victim_accuracy_key(victim[1], victim[2], model, ds)
    victim_eval = evaluate_model(model, victim[1], victim[2], ds, sets, ctl, cfg.verify,
                                 accuracy=_VICTIM_ACCURACY.get(acc_key))  # fmt: skip
    _VICTIM_ACCURACY[acc_key] = victim_eval["test_accuracy"]
    null_ret = [[x["retention"] for x in victim_eval["sets"]]]
    for _, p, s in nulls:
        r = evaluate_model(model, p, s, ds, sets, ctl, cfg.verify)
        null_ret.append([x["retention"] for x in r["sets"]])
    results: dict[str, Any] = {
        "dataset": ds.name,
        "num_classes": ds.num_classes,
        "test_images": int(ds.test_images.shape[0]),  # what every clean accuracy here is on
        "model": model.name,
        "digest": digest,
        "victim": victim_eval,
        "null_retentions": null_ret,
        "methods": {},
        "environment": experiments.environment(),
    }
    for method in cfg.pipeline.methods:
        t1 = time.perf_counter()
        p, s, hist = embed_model(cfg, method, model, victim[1], victim[2], ds, sets, cfg.seed,
                                 events_dir=workdir / method)  # fmt: skip
        p, s = jax.device_get((p, s))
        res = evaluate_model(model, p, s, ds, sets, ctl, cfg.verify, null_ret)
        res["embed_s"] = time.perf_counter() - t1
        res["history"] = hist
        results["methods"][method] = res
        meta = {
            "config": config.public_dict(cfg),
            "dataset": {"name": ds.name, "source": cfg.data.source, "class_names": ds.class_names},
            "normalization": {"mean": ds.mean, "std": ds.std},
            "watermark": {
                "method": method,
                "manifests": [f"watermark/manifest{i}.json" for i in range(len(sets))],
                "digest": digest,  # attack checks the manifests beside it are these
            },
            "metrics": {k: v for k, v in res.items() if k != "history"},
            "fingerprint": fingerprint.record(
                "embed", fingerprint.embed_fields(cfg, method=method)
            ),
        }
        checkpoint.save_model(workdir / method, p, s, meta)
    results["wall_s"] = time.perf_counter() - t0
    experiments.write_json(workdir / "results.json", results)
    table = table1(results)
    (workdir / "table1.md").write_text(table)
    print(table)
    return results


def _trained(cfg, run_dir: Path, seed: int, label: str, model, ds, *, given: bool = False):
    """A model trained by mode ``train`` in ``run_dir`` with ``cfg`` at ``seed``.

    A finished run there is reused only when its fingerprint matches (else refused, or moved
    aside with ``restart=True``); an unfinished one resumes under the same rule. A ``given``
    directory (``pipeline.victim``) is never trained or moved: it must hold a finished model of
    the same fingerprint.
    """
    sub = ml_collections.ConfigDict(cfg.to_dict())
    sub.seed = seed
    sub.mode = "train"
    rec = fingerprint.record("train", fingerprint.train_fields(sub))
    if given:
        where = f"pipeline.victim={str(run_dir)!r}"
        if not (run_dir / "model" / "meta.json").is_file():
            raise ConfigError(
                f"{where} holds no finished model (no model/meta.json); pass the run directory "
                "of a finished mode=train run, or leave pipeline.victim empty to train one in "
                "<workdir>/victim"
            )
        fingerprint.check_model(
            run_dir, rec, label=where,
            hint="run the pipeline with the config it was trained with (see its model/meta.json), "
            "or leave pipeline.victim empty to train a victim with this config in <workdir>/victim",
        )  # fmt: skip
    else:
        fingerprint.bind(
            run_dir, rec, restart=cfg.restart, label=f"the {label} run {str(run_dir)!r}"
        )
    if (run_dir / "model").is_dir():
        _say(f"{label}: reusing {run_dir / 'model'}")
    else:
        _say(f"{label}: training in {run_dir}")
        experiments.run_train(sub, run_dir)
    params, state, meta = checkpoint.load_model(run_dir)
    check_fits(
        model, params, state, ds.image_shape[2], f"the {label} in {run_dir}",
        _arch(config.public_dict(cfg), ds.num_classes),
        _arch(meta["config"], len(meta["dataset"]["class_names"])),
    )  # fmt: skip
    return run_dir, params, state


def table1(results: dict[str, Any]) -> str:
    """Table 1 as Markdown: one row per model, the paper's figures beside ours (one table).

    Args:
      results: What :func:`run_pipeline` writes to ``results.json``.

    Returns:
      The heading (dataset, model, device, the split clean accuracy is measured on) and table.
    """
    paper = PAPER_TABLE1.get(results["dataset"].replace("-", "").replace("_", "").lower())

    def pct(x):
        return f"{100 * x:.2f}"

    def ref(method, i):
        return "—" if paper is None or method not in paper else f"{paper[method][i]:.2f}"

    rows = ["| model | clean acc % (test split) | retention % | p-value | owned | paper acc % | paper retention % |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    v = results["victim"]
    paper_victim = "—" if paper is None else f"{paper['victim']:.2f}"
    rows.append(
        f"| victim (no watermark) | {pct(v['test_accuracy'])} | {pct(v['sets'][0]['retention'])} | "
        f"{v['sets'][0]['p_value']:.2g} | {v['sets'][0]['owned']} | "
        f"{paper_victim} | — |"
    )
    for method, r in results["methods"].items():
        s = r["sets"][0]
        rows.append(
            f"| {method} | {pct(r['test_accuracy'])} | {pct(s['retention'])} | {s['p_value']:.2g} | "
            f"{s['owned']} | {ref(method, 0)} | {ref(method, 1)} |"
        )
    n_test = results.get("test_images")
    split = f"the full test split ({n_test} images)" if n_test else "the full test split"
    head = (
        f"Table 1 analogue: {results['dataset']} ({results['num_classes']} classes), "
        f"{results['model']}, {results['environment']['device']}; wall {results.get('wall_s', 0):.0f} s.\n"
        f"Clean accuracy is on {split}; retention = accuracy on the owner's watermark set "
        f"(set 0); chance is {100 / results['num_classes']:.1f}%.\n\n"
    )
    return head + "\n".join(rows) + "\n"


def run_embed(cfg: ml_collections.ConfigDict, workdir: Path) -> dict[str, Any]:
    """Mode ``embed``: watermarks the model in ``embed.victim`` and saves it to ``workdir``."""
    if not cfg.embed.victim:
        raise ConfigError("mode=embed needs embed.victim: the run directory of a trained model")
    tensorboard.check_available(cfg.tensorboard)
    ds = experiments.load_data(cfg)
    model, params, state, _ = load_model_for(cfg.embed.victim, ds.num_classes, ds.image_shape[2])
    sets = make_sets(cfg, ds)
    digest = write_manifests(workdir, sets, ds.name)
    manifests = [f"manifest{i}.json" for i in range(len(sets))]
    ctl = make_controls(cfg, ds, sets)
    before = evaluate_model(model, params, state, ds, sets, ctl, cfg.verify)
    p, s, hist = embed_model(cfg, cfg.embed.method, model, params, state, ds, sets, cfg.seed,
                             events_dir=workdir)  # fmt: skip
    p, s = jax.device_get((p, s))
    after = evaluate_model(model, p, s, ds, sets, ctl, cfg.verify)
    meta = {
        "config": config.public_dict(cfg),
        "dataset": {"name": ds.name, "source": cfg.data.source, "class_names": ds.class_names},
        "normalization": {"mean": ds.mean, "std": ds.std},
        "watermark": {"method": cfg.embed.method, "manifests": manifests, "digest": digest},
        "metrics": after,
        "fingerprint": fingerprint.embed_record(cfg),  # what the workdir was bound to
    }
    checkpoint.save_model(workdir, p, s, meta)
    out = {"before": before, "after": after, "history": hist}
    experiments.write_json(workdir / "results.json", out)
    print(
        f"{cfg.embed.method}: clean accuracy {100 * before['test_accuracy']:.2f}% -> "
        f"{100 * after['test_accuracy']:.2f}%, retention {100 * after['sets'][0]['retention']:.2f}%; "
        f"model in {workdir / 'model'}, manifest(s) {manifests}"
    )
    return out
