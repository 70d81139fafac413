"""Partitioned embedding (Algorithm 1) and the baseline."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxwm import data, embed, models, triggers
from jaxwm.engine import loop, partition, train
from jaxwm.engine.hparams import Hparams


@pytest.mark.parametrize(
    "epochs,n,expected",
    [
        (6, 3, [0, 0, 1, 1, 2, 2]),
        (3, 3, [0, 1, 2]),
        (7, 3, [0, 0, 1, 1, 2, 2, 2]),  # 7 // 3 = 2 epochs per stage; stage capped at n - 1
        (4, 1, [0, 0, 0, 0]),
        (2, 3, [1, 2]),  # epochs < n: ceil(n / epochs) layers per epoch, all by the end
        (1, 4, [3]),
        (3, 4, [1, 2, 3]),
    ],
)
def test_stage_schedule_table(epochs, n, expected):
    assert embed.stage_schedule(epochs, n) == expected


def test_unfrozen_per_epoch_is_reversed_and_cumulative():
    assert embed.unfrozen_per_epoch(["layer3", "layer4", "head"], 6) == [
        ("head",),
        ("head",),
        ("head", "layer4"),
        ("head", "layer4"),
        ("head", "layer4", "layer3"),
        ("head", "layer4", "layer3"),
    ]


@pytest.mark.parametrize("epochs,n", [(0, 2), (3, 0)])
def test_stage_schedule_rejects_empty(epochs, n):
    with pytest.raises(ValueError, match="must be >= 1"):
        embed.stage_schedule(epochs, n)


@pytest.fixture(scope="module")
def victim():
    ds = data.load_dataset("synthetic:train=256,test=128,classes=4")
    model = models.resnet(4, stage_sizes=(1, 1), widths=(16, 32))
    hp = Hparams(epochs=6, batch_size=32, peak_lr=0.05, crop_pad=1, flip=False)
    res = loop.fit(model.init, model.apply, ds, hp, progress=False)
    trig = triggers.make_trigger_set(
        "noise", secret="test-owner", size=16, image_shape=(8, 8, 3), num_classes=4
    )
    return ds, model, jax.device_get(res.state.params), jax.device_get(res.state.state), trig


def _kw(ds, **settings):
    return dict(settings=embed.hparams(**settings), mean=ds.mean, std=ds.std, key=jax.random.key(0))


def test_each_stage_trains_exactly_its_layers(victim):
    ds, model, params, state, trig = victim
    snapshots = []
    embed.partitioned_embed(
        model.apply, params, state, trig.images, trig.labels,
        layers_to_turn=["layer2", "head"],
        on_epoch=lambda row, p, s: snapshots.append((row, jax.device_get(p), jax.device_get(s))),
        **_kw(ds, epochs=4, peak_lr=1e-2, batch_size=8),
    )  # fmt: skip
    assert [r["trainable"] for r, _, _ in snapshots] == [
        ["head"], ["head"], ["head", "layer2"], ["head", "layer2"]
    ]  # fmt: skip
    paths = partition.tree_paths(params)
    prev = params
    for row, p, s in snapshots:
        trained = partition.trainable_mask(params, row["trainable"], log_table=False)
        for path, m, a, b in zip(
            paths, jax.tree.leaves(trained), jax.tree.leaves(prev), jax.tree.leaves(p), strict=True
        ):
            assert np.array_equal(a, b) != m, (row["epoch"], path)
        # BatchNorm statistics never move while embedding (bn_mode="inference", the default).
        for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(s), strict=True):
            np.testing.assert_array_equal(a, b)
        prev = p


def test_optimizer_is_reset_every_epoch(victim):
    """Two epochs of one full-batch SGD-momentum step equal two separate one-epoch runs."""
    ds, model, params, state, trig = victim
    kw = _kw(ds, epochs=2, peak_lr=0.05, batch_size=16, optimizer="sgd")
    p2, _, _ = embed.baseline_embed(model.apply, params, state, trig.images, trig.labels, **kw)
    kw1 = _kw(ds, epochs=1, peak_lr=0.05, batch_size=16, optimizer="sgd")
    p1, s1, _ = embed.baseline_embed(model.apply, params, state, trig.images, trig.labels, **kw1)
    p11, _, _ = embed.baseline_embed(model.apply, p1, s1, trig.images, trig.labels, **kw1)
    for a, b, c in zip(
        jax.tree.leaves(p2), jax.tree.leaves(p11), jax.tree.leaves(params), strict=True
    ):
        # Had momentum carried over, epoch 2 would move by ~1.9x as much as a fresh step.
        np.testing.assert_allclose(a - c, b - c, rtol=1e-3, atol=1e-6)


def test_compiles_once_per_stage(victim):
    ds, model, params, state, trig = victim
    traces = []

    def counting_apply(p, s, x, *, train=False, frozen=()):
        traces.append(train)
        return model.apply(p, s, x, train=train, frozen=frozen)

    for _ in range(2):  # the second call (e.g. another set or key) reuses the compilations
        embed.partitioned_embed(
            counting_apply, params, state, trig.images, trig.labels,
            layers_to_turn=["layer1", "layer2", "head"],
            **_kw(ds, epochs=6, peak_lr=1e-3, batch_size=8),
        )  # fmt: skip
    assert sum(traces) == 3  # one training trace per stage, however many epochs and calls


def test_tiny_embed_reaches_retention_with_small_accuracy_loss(victim):
    ds, model, params, state, trig = victim
    evaluate = train.make_eval(model.apply, ds.mean, ds.std)
    acc0 = float(evaluate(params, state, ds.test_images, ds.test_labels))
    p, s, hist = embed.partitioned_embed(
        model.apply, params, state, trig.images, trig.labels,
        layers_to_turn=["layer2", "head"],
        clean_images=ds.train_images, clean_labels=ds.train_labels, clean_per_trigger=2.0,
        **_kw(ds, epochs=24, peak_lr=3e-3, batch_size=16),
    )  # fmt: skip
    acc = float(evaluate(p, s, ds.test_images, ds.test_labels))
    assert acc0 > 0.9
    assert hist[-1]["retention"] >= 0.9
    assert acc >= acc0 - 0.05
    # the trigger labels are random: the untouched victim agrees only by chance
    assert float(evaluate(params, state, trig.images, trig.labels)) < 0.6


def test_early_stop_at_target_retention(victim):
    ds, model, params, state, trig = victim
    _, _, hist = embed.baseline_embed(
        model.apply, params, state, trig.images, trig.labels,
        target_retention=0.5, **_kw(ds, epochs=40, peak_lr=3e-3, batch_size=16),
    )  # fmt: skip
    assert hist[-1]["retention"] >= 0.5 and len(hist) < 40
    assert all(r["retention"] < 0.5 for r in hist[:-1])


class SmallCNN(nn.Module):
    """Not jaxwm's ResNet: no BatchNorm, different names."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), name="features")(x))
        x = nn.relu(nn.Dense(32, name="hidden")(x.reshape(x.shape[0], -1)))
        return nn.Dense(4, name="classifier")(x)


def test_pure_functions_work_on_another_flax_model(victim):
    ds, _, _, _, trig = victim
    net = SmallCNN()

    def apply(params, state, x, *, train=False, frozen=()):
        return net.apply({"params": params}, x), state

    params = net.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
    before = jax.device_get(params)
    p, _, hist = embed.partitioned_embed(
        apply, params, {}, trig.images, trig.labels,
        layers_to_turn=["hidden", "classifier"], **_kw(ds, epochs=30, peak_lr=3e-3, batch_size=16),
    )  # fmt: skip
    assert hist[-1]["retention"] >= 0.9
    np.testing.assert_array_equal(p["features"]["kernel"], before["features"]["kernel"])
    assert not np.array_equal(p["hidden"]["kernel"], before["hidden"]["kernel"])


def test_embed_many_uses_separate_layers(victim):
    ds, model, params, state, trig = victim
    trig2 = triggers.make_trigger_set(
        "noise", secret="test-owner", size=16, image_shape=(8, 8, 3), num_classes=4, index=1
    )
    p, _, hists = embed.embed_many(
        model.apply, params, state,
        [(trig.images, trig.labels, ["head"]), (trig2.images, trig2.labels, ["layer2"])],
        settings=embed.hparams(epochs=2, peak_lr=1e-3, batch_size=8),
        mean=ds.mean, std=ds.std, key=jax.random.key(1),
    )  # fmt: skip
    assert [h[0]["trainable"] for h in hists] == [["head"], ["layer2"]]
    np.testing.assert_array_equal(p["layer1"]["block0"]["conv1"]["kernel"],
                                  params["layer1"]["block0"]["conv1"]["kernel"])  # fmt: skip


def test_with_triggers_appends_repeated_sets():
    x = np.zeros((5, 2, 2, 1), np.uint8)
    y = np.arange(5, dtype=np.int32)
    t = (np.full((2, 2, 2, 1), 7, np.uint8), np.array([9, 8], np.int32))
    xs, ys = embed.with_triggers(x, y, [t], repeat=3)
    assert xs.shape == (11, 2, 2, 1) and xs.dtype == np.uint8
    assert ys.tolist() == [0, 1, 2, 3, 4, 9, 8, 9, 8, 9, 8]
    with pytest.raises(ValueError, match="adi_repeat"):
        embed.with_triggers(x, y, [t], repeat=0)


@pytest.mark.parametrize(
    "bn_mode,moved",
    [
        ("inference", set()),  # every layer at test-time behaviour, nothing moves
        ("trainable", {"layer2"}),  # only the trainable layer's statistics
        ("all", {"stem", "layer1", "layer2"}),  # PyTorch's train(): frozen layers' too
    ],
)
def test_bn_mode_decides_which_statistics_move_never_frozen_parameters(victim, bn_mode, moved):
    ds, model, params, state, trig = victim
    p, s, _ = embed.partitioned_embed(
        model.apply, params, state, trig.images, trig.labels, layers_to_turn=["layer2"],
        **_kw(ds, epochs=1, peak_lr=1e-2, batch_size=8, bn_mode=bn_mode),
    )  # fmt: skip
    for path, a, b in zip(
        partition.tree_paths(state), jax.tree.leaves(state), jax.tree.leaves(s), strict=True
    ):
        assert np.array_equal(a, b) != (path.split("/")[0] in moved), (bn_mode, path)
    for path, a, b in zip(
        partition.tree_paths(params), jax.tree.leaves(params), jax.tree.leaves(p), strict=True
    ):
        # Frozen parameters bit-identical in every mode; the trainable layer's all moved.
        assert np.array_equal(a, b) != path.startswith("layer2/"), (bn_mode, path)


def test_embed_rejects_an_unknown_bn_mode(victim):
    ds, model, params, state, trig = victim
    with pytest.raises(ValueError, match="inference|trainable|all"):
        embed.baseline_embed(
            model.apply, params, state, trig.images, trig.labels,
            **_kw(ds, epochs=1, bn_mode="frozen"),
        )  # fmt: skip
