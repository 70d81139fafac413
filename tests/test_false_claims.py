"""False claims: a claimant must never own a model nobody watermarked; an honest owner still does.

Tiny independent models (synthetic data, CPU) stand in for innocent suspects. Each probe is one a
false claimant would try: pick the class the model prefers for a target-label set, try many keys,
drop the controls. The honest owner's watermarked model must still be owned.
"""

import jax
import numpy as np
import pytest

from jaxwm import controls, data, embed, models, triggers, verify
from jaxwm.engine import loop, train
from jaxwm.engine.hparams import Hparams

K = 4
SOURCE = f"synthetic:train=256,test=64,classes={K}"
ALPHA = 1e-3


@pytest.fixture(scope="module")
def world():
    """Three independently trained models, and the owner's watermarked copies of the first."""
    ds = data.load_dataset(SOURCE)
    model = models.resnet(K, stage_sizes=(1, 1), widths=(16, 32))
    hp = Hparams(epochs=6, batch_size=32, peak_lr=0.05, crop_pad=1, flip=False)
    innocents = []
    for seed in range(3):
        res = loop.fit(model.init, model.apply, ds, hp, seed=seed, progress=False)
        innocents.append(jax.device_get((res.state.params, res.state.state)))
    predict = train.make_predict(model.apply, ds.mean, ds.std)

    def labels_of(ps, images):
        return verify.predict_labels(lambda x: predict(*ps, x), images)

    secret = "9b1e0c7f3a5d2e8c4f6a1b3d5e7c9f0a2b4d6e8f1a3c5e7b9d0f2a4c6e8b1d3f"  # fixed: no flakes
    owner = {}
    # Content triggers with random labels: with one target label the model tends to send any
    # stamp to it, fresh-key control stamps included, so whether the rank test can attribute it
    # depends on the numerics (under jax 0.11.2 one of 1,000 control sets tied the owner's).
    # The study found the same on MNIST (README, The deciding study: content_target owned in 3
    # of 9 units); the honest owner here uses random labels, which stay key-specific.
    for name, kind, policy in [("random", "noise", "random"), ("content", "content", "random")]:
        src = {} if kind == "noise" else {"source_images": ds.train_images,
                                           "source_labels": ds.train_labels}  # fmt: skip
        ts = triggers.make_trigger_set(kind, secret=secret, size=32, image_shape=ds.image_shape,
                                       num_classes=K, label_policy=policy, target_class=1, **src)  # fmt: skip
        p, s, _ = embed.baseline_embed(
            model.apply, *innocents[0], ts.images, ts.labels,
            settings=embed.hparams(epochs=40, peak_lr=3e-3, batch_size=32),
            mean=ds.mean, std=ds.std, key=jax.random.key(1), clean_images=ds.train_images,
            clean_labels=ds.train_labels, clean_per_trigger=2.0,
        )  # fmt: skip
        owner[name] = (ts, src, jax.device_get((p, s)))
    return ds, innocents, labels_of, secret, owner


def _verdict(labels_of, ps, ts, secret, src, *, use_controls=True):
    count = controls.control_count(ts.kind, ALPHA)
    ctl = controls.control_sets(ts.params, secret, count=count, **src) if use_controls else []
    return verify.verify_predictions(
        labels_of(ps, ts.images), ts.labels, K, alpha=ALPHA,
        chance=triggers.chance_level(ts.params), control_clustered=controls.clustered(ts.kind),
        control_predicted=labels_of(ps, np.concatenate([c.images for c in ctl])) if ctl else None,
        control_labels=np.concatenate([c.labels for c in ctl]) if ctl else None,
    )  # fmt: skip


def test_target_claimant_never_owns_an_independent_model(world):
    ds, innocents, labels_of, _, _ = world
    binomial_alone_claims = 0
    for m, ps in enumerate(innocents):
        for target in range(K):
            claimant = f"claimant-{target}-{m}"
            ts = triggers.make_trigger_set("noise", secret=claimant, size=64,
                                           image_shape=ds.image_shape, num_classes=K,
                                           label_policy="target", target_class=target)  # fmt: skip
            v = _verdict(labels_of, ps, ts, claimant, {})
            assert not v.owned, v.reason
            binomial = next(t for t in v.tests if t["name"] == "binomial")
            binomial_alone_claims += binomial["p_value"] < ALPHA
            # Without controls nothing separates a watermark from the model's bias: refused.
            bare = _verdict(labels_of, ps, ts, claimant, {}, use_controls=False)
            assert not bare.owned and "bias" in bare.reason
    # The probe is real: innocent models prefer a class on abstract images, so the 1/K binomial
    # alone (jaxwm 0.1's verdict) would have accused at least one of them.
    assert binomial_alone_claims >= 1


def test_many_random_claimant_keys_never_own(world):
    ds, innocents, labels_of, _, _ = world
    for i in range(20):
        claimant = f"random-claimant-{i}"
        policy = ("random", "target")[i % 2]
        ts = triggers.make_trigger_set("noise", secret=claimant, size=32,
                                       image_shape=ds.image_shape, num_classes=K,
                                       label_policy=policy, target_class=i % K)  # fmt: skip
        for ps in innocents:
            assert not _verdict(labels_of, ps, ts, claimant, {}).owned


def test_honest_owner_is_still_owned(world):
    _, innocents, labels_of, secret, owner = world
    for name in ("random", "content"):
        ts, src, ps = owner[name]
        v = _verdict(labels_of, ps, ts, secret, src)
        # Content: a rank among 1,000 fresh-key sets, so p = 1/1001 at best.
        assert v.owned and v.p_value < (1e-6 if name == "random" else 1e-3), (name, v.reason)
        names = {t["name"] for t in v.tests if t["decides"]}
        assert "control" in names
        # The same set against the innocent models it was not embedded into: not owned.
        for other in innocents:
            assert not _verdict(labels_of, other, ts, secret, src).owned


def test_holm_correction_over_sets(world):
    _, innocents, labels_of, secret, owner = world
    ts, src, ps = owner["random"]
    good = _verdict(labels_of, ps, ts, secret, src)
    bad = _verdict(labels_of, innocents[1], ts, secret, src)
    owned, both, summary = verify.decide_sets([good, bad], ALPHA)
    assert owned and both[0].owned and not both[1].owned and "1 of 2" in summary
    assert both[0].adjusted_p_value == pytest.approx(min(1.0, 2 * good.p_value), rel=1e-9)


def test_content_control_is_a_calibrated_rank_test(world):
    # Content triggers share one stamp per key, so matches cluster by key. Pooling the control
    # images (Fisher) let ground keys "own" innocent models far above alpha; ranking whole sets
    # is exact: P(p <= 1/20) = 1/20 for any innocent model, whatever its response to stamps.
    ds, innocents, labels_of, _, _ = world
    src = {"source_images": ds.train_images, "source_labels": ds.train_labels}
    small_p = 0
    for i in range(40):
        claimant = f"content-claimant-{i}"
        ts = triggers.make_trigger_set("content", secret=claimant, size=16,
                                       image_shape=ds.image_shape, num_classes=K,
                                       label_policy="target", target_class=i % K, **src)  # fmt: skip
        ctl = controls.control_sets(ts.params, claimant, count=19, **src)
        v = verify.verify_predictions(
            labels_of(innocents[0], ts.images), ts.labels, K, alpha=0.05,
            chance=triggers.chance_level(ts.params), control_clustered=True,
            control_predicted=labels_of(innocents[0], np.concatenate([c.images for c in ctl])),
            control_labels=np.concatenate([c.labels for c in ctl]),
        )  # fmt: skip
        control = next(t for t in v.tests if t["name"] == "control")
        assert control["p_value"] >= 1 / 20 - 1e-12  # a rank among 19 sets cannot go lower
        small_p += control["p_value"] <= 1 / 20 + 1e-12
    assert small_p <= 6  # expected 2 of 40; 7 or more has probability below 0.5%
