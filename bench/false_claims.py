"""Empirical false-claim rate of jaxwm's verifier: claimants against models nobody watermarked.

Trains ``--models`` independent models on the embedded digits (the demo's architecture, other
seeds), then for ``--secrets`` random claimant keys builds a claimant's set against every model
and verifies it exactly as mode ``verify`` does (control sets from fresh keys, permutation test,
binomial reported). Half the claimants use random labels; the other half are the worst-case
target-label claimant who picks, for each model, the class it prefers on abstract images. Every
(key, model) pair is a false claim if owned. Prints one JSON object: per claimant kind and per
alpha the false claims, the rate, and its Clopper-Pearson 95% upper bound; the same for the 1/K
binomial alone (jaxwm 0.1's verdict) for contrast.

Command:  JAX_PLATFORMS=cpu python bench/false_claims.py --models 5 --secrets 1000 > fc.json
Runtime:  about 5 minutes on 2 CPU cores (training the five models is most of it).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import jax
import numpy as np

from jaxwm import controls, data, models, stats, triggers, verify
from jaxwm.engine import loop, train
from jaxwm.engine.hparams import Hparams
from jaxwm.runner import experiments

ALPHAS = (0.05, 0.01, 1e-3)


def _models(n: int, epochs: int):
    ds = data.load_dataset("digits")
    model = models.resnet(ds.num_classes, stage_sizes=(1, 1, 1), widths=(16, 32, 64))
    hp = Hparams(epochs=epochs, batch_size=64, peak_lr=0.05, crop_pad=1, flip=False,
                      steps_per_call=11)  # fmt: skip
    out = []
    for seed in range(100, 100 + n):
        res = loop.fit(model.init, model.apply, ds, hp, seed=seed, progress=False)
        acc = res.history[-1].get("test_acc")
        print(f"model seed {seed}: test accuracy {acc}", file=sys.stderr, flush=True)
        out.append(jax.device_get((res.state.params, res.state.state)))
    predict = train.make_predict(model.apply, ds.mean, ds.std)
    return ds, out, predict


def _owned_at(v: verify.Verdict, alpha: float) -> bool:
    deciding = [t for t in v.tests if t["decides"]]
    bias_aware = any(t["name"] in ("control", "permutation") for t in v.tests)
    return bias_aware and all(t["log10_p_value"] < math.log10(alpha) for t in deciding)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=5)
    ap.add_argument("--secrets", type=int, default=1000)
    ap.add_argument("--size", type=int, default=50, help="triggers per claimant set")
    ap.add_argument("--epochs", type=int, default=15)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    ds, nets, predict = _models(args.models, args.epochs)
    k = ds.num_classes

    def labels_of(ps, images):
        return verify.predict_labels(lambda x: predict(*ps, x), images)

    # Each model's preferred class on abstract images: the worst-case target for a claimant.
    probe = triggers.make_trigger_set("noise", secret="probe:" + triggers.generate_secret(),
                                      size=200, image_shape=ds.image_shape, num_classes=k)  # fmt: skip
    preferred = [int(np.bincount(labels_of(ps, probe.images), minlength=k).argmax()) for ps in nets]
    counts = {kind: {"pairs": 0, **{f"owned@{a:g}": 0 for a in ALPHAS},
                     **{f"binomial_alone@{a:g}": 0 for a in ALPHAS}}
              for kind in ("random", "target_preferred")}  # fmt: skip
    min_log10_p = {kind: 0.0 for kind in counts}
    for i in range(args.secrets):
        secret = triggers.generate_secret()
        kind = ("random", "target_preferred")[i % 2]
        for m, ps in enumerate(nets):
            ts = triggers.make_trigger_set(
                "noise", secret=secret, size=args.size, image_shape=ds.image_shape, num_classes=k,
                label_policy="random" if kind == "random" else "target", target_class=preferred[m],
            )  # fmt: skip
            ctl = controls.control_sets(ts.params, secret)
            v = verify.verify_predictions(
                labels_of(ps, ts.images), ts.labels, k,
                control_predicted=labels_of(ps, np.concatenate([c.images for c in ctl])),
                control_labels=np.concatenate([c.labels for c in ctl]),
            )  # fmt: skip
            c = counts[kind]
            c["pairs"] += 1
            binom = next(t for t in v.tests if t["name"] == "binomial")
            for a in ALPHAS:
                c[f"owned@{a:g}"] += _owned_at(v, a)
                c[f"binomial_alone@{a:g}"] += binom["log10_p_value"] < math.log10(a)
            min_log10_p[kind] = min(min_log10_p[kind], v.log10_p_value)
        if (i + 1) % 100 == 0:
            print(f"{i + 1}/{args.secrets} keys, {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr, flush=True)  # fmt: skip
    result = {"command": "python bench/false_claims.py " + " ".join(sys.argv[1:] if argv is None
                                                                     else argv),
              "models": args.models, "keys": args.secrets, "triggers_per_set": args.size,
              "control_sets": controls.DEFAULT_CONTROL_SETS, "preferred_classes": preferred,
              "wall_s": round(time.perf_counter() - t0, 1),
              "environment": experiments.environment(), "claimants": {}}  # fmt: skip
    for kind, c in counts.items():
        rows = {}
        for a in ALPHAS:
            for what in ("owned", "binomial_alone"):
                x = c[f"{what}@{a:g}"]
                rows[f"{what}@{a:g}"] = {
                    "false_claims": x, "rate": x / c["pairs"],
                    "upper95": stats.clopper_pearson(x, c["pairs"], 0.90)[1],  # one-sided 95%
                    "at_or_below_alpha": stats.clopper_pearson(x, c["pairs"], 0.90)[1] <= a
                    if what == "owned" else None,
                }  # fmt: skip
        result["claimants"][kind] = {"pairs": c["pairs"], "min_log10_p": min_log10_p[kind], **rows}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
