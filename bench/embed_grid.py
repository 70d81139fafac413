"""Calibrates watermark-embedding settings on a GPU: one victim, several settings, JSON lines.

Trains a victim with a dataset preset (fewer epochs by default), then for each setting embeds
the owner's 100-image noise watermark with partitioned embedding (Algorithm 1 over layer4 and
head) and with the full fine-tuning baseline from that same victim, and prints clean accuracy
and retention per (setting, method) as one JSON line each (also appended to --out).

Command (GPU):
  python bench/embed_grid.py --dataset cifar10 --source folder:.gpu/data/cifar10.tar.gz \
      --victim-epochs 30 --out results.jsonl
Runtime: about 2-4 minutes per dataset on one H200 (victim + a compile per stage and setting).
"""

from __future__ import annotations

import argparse
import json
import time

import jax

from jaxwm import data, embed, triggers
from jaxwm.engine import loop, train
from jaxwm.engine.hparams import Hparams
from jaxwm.runner import config, experiments

SETTINGS = {
    "adamw1e-4": dict(optimizer="adamw", lr=1e-4, batch_size=20, epochs=60),
    "adamw1e-4_mix2": dict(optimizer="adamw", lr=1e-4, batch_size=20, epochs=60, mix=2.0),
    "sgd1e-2": dict(optimizer="sgd", lr=1e-2, batch_size=20, epochs=60),
    "adamw1e-4_bnupdate": dict(
        optimizer="adamw", lr=1e-4, batch_size=20, epochs=60, bn="trainable"
    ),
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--source", required=True)
    p.add_argument("--victim-epochs", type=int, default=30)
    p.add_argument("--settings", nargs="+", default=list(SETTINGS))
    p.add_argument("--out")
    a = p.parse_args()
    cfg = config.preset(a.dataset)
    cfg.data.source = a.source
    ds = data.load_dataset(a.source)
    model = experiments.build_model(cfg, ds.num_classes)
    hp = experiments.hparams(cfg.train)
    hp = Hparams(**{**hp.__dict__, "epochs": a.victim_epochs, "eval_every": 0})
    t0 = time.perf_counter()
    victim = loop.fit(model.init, model.apply, ds, hp, progress=False)
    params, state = jax.device_get((victim.state.params, victim.state.state))
    evaluate = train.make_eval(model.apply, ds.mean, ds.std)
    trig = triggers.make_trigger_set(
        "noise", secret="grid", size=100, image_shape=ds.image_shape, num_classes=ds.num_classes
    )

    def emit(row):
        row.update(dataset=ds.name, device=experiments.environment()["device"])
        print(json.dumps(row), flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(row) + "\n")

    emit({"what": "victim", "test_acc": victim.test_accuracy, "wall_s": time.perf_counter() - t0})
    for name in a.settings:
        s = SETTINGS[name]
        st = embed.hparams(
            epochs=s["epochs"], peak_lr=s["lr"], batch_size=s["batch_size"],
            optimizer=s["optimizer"], bn_mode=s.get("bn", "inference"),
        )  # fmt: skip
        for method in ("partitioned", "baseline"):
            t1 = time.perf_counter()
            kw = dict(
                settings=st, mean=ds.mean, std=ds.std, key=jax.random.key(0),
                clean_images=ds.train_images, clean_labels=ds.train_labels,
                clean_per_trigger=s.get("mix", 0.0),
            )  # fmt: skip
            if method == "partitioned":
                p2, s2, h = embed.partitioned_embed(
                    model.apply, params, state, trig.images, trig.labels,
                    layers_to_turn=["layer4", "head"], **kw,
                )  # fmt: skip
            else:
                p2, s2, h = embed.baseline_embed(
                    model.apply, params, state, trig.images, trig.labels, **kw
                )
            acc = float(evaluate(p2, s2, ds.test_images, ds.test_labels))
            emit({
                "what": "embed", "setting": name, "method": method, **s,
                "test_acc": acc, "retention": h[-1]["retention"],
                "retention_curve": [round(r["retention"], 3) for r in h][::5],
                "loss_curve": [round(r["loss"], 3) for r in h][::5],
                "wall_s": time.perf_counter() - t1,
            })  # fmt: skip


if __name__ == "__main__":
    main()
