"""Tests for jaxwm.attacks: pruning masks, quantization, fine-tuning variants, distillation.

One tiny ResNet (stages (1, 1), widths (4, 8)) on 8x8 synthetic 4-class images. The compiled
training epochs are cached by configuration inside jaxwm.attacks, so the tests below share a
handful of compilations: keep lr / batch size / augmentation equal across fine-tuning tests.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxwm import attacks, embed, models
from jaxwm.engine import compile_stats, train
from jaxwm.errors import ConfigError

MEAN, STD = (0.3,), (0.3,)
LR, BS = 0.05, 32
FT = {"mean": MEAN, "std": STD, "lr": LR, "batch_size": BS}


def _make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class c brightens quadrant c of a noisy 8x8 image."""
    rng = np.random.RandomState(seed)
    y = rng.randint(0, 4, n)
    x = rng.randint(0, 60, (n, 8, 8, 1))
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, 4 * r : 4 * r + 4, 4 * col : 4 * col + 4, 0] += 150
    return x.astype(np.uint8), y.astype(np.int32)


def _leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _changed(a, b) -> dict[str, bool]:
    """{path: leaf differs} for two pytrees of the same structure."""
    la = jax.tree_util.tree_flatten_with_path(a)[0]
    lb = jax.tree.leaves(b)
    return {
        jax.tree_util.keystr(kp): not np.array_equal(np.asarray(x), np.asarray(y))
        for (kp, x), y in zip(la, lb, strict=True)
    }


def _assert_same(a, b) -> None:
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)


@pytest.fixture(scope="module")
def model():
    return models.resnet(4, stage_sizes=(1, 1), widths=(4, 8))


@pytest.fixture(scope="module")
def data():
    return _make_data(128, 0)


@pytest.fixture(scope="module")
def fresh(model):
    return model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))


@pytest.fixture(scope="module")
def victim(model, fresh, data):
    """A trained model (also the distillation teacher); trained with the FTAL compilation."""
    x, y = data
    return attacks.ftal(model.apply, *fresh, x, y, key=jax.random.key(1), epochs=12, **FT)


@pytest.fixture(scope="module")
def predict(model):
    return train.make_predict(model.apply, MEAN, STD)


def test_victim_learned_the_task(victim, predict):
    x, y = _make_data(64, 9)
    acc = np.mean(np.argmax(predict(*victim, x), -1) == y)
    assert acc > 0.9, acc


# ---------------------------------------------------------------------------------- pruning


def test_channel_masks_prune_exactly_the_chosen_channels(model, victim):
    params, state = victim
    rng = np.random.RandomState(3)
    x = jnp.asarray(rng.normal(size=(16, 8, 8, 1)), jnp.float32)  # any input, not just data
    _, before = model.activations(params, state, x)
    keep = {
        "layer1/block0": np.array([True, False, True, False]),
        "layer2/block0": np.array([False, True, True, True, False, True, True, True]),
    }
    mask = attacks.channel_masks_to_param_mask(keep, model.prunable, params)
    k1 = mask["layer1"]["block0"]["conv1"]["kernel"]
    assert k1.shape == params["layer1"]["block0"]["conv1"]["kernel"].shape
    assert np.array_equal(k1.all(axis=(0, 1, 2)), keep["layer1/block0"]) and k1.any(axis=3).all()
    assert np.array_equal(mask["layer2"]["block0"]["bn1"]["bias"], keep["layer2/block0"])
    untouched = [m for m in jax.tree.leaves(mask) if m.all()]
    assert len(untouched) == len(jax.tree.leaves(params)) - 6  # 3 leaves per pruned layer

    _, after = model.activations(attacks.apply_mask(params, mask), state, x)
    for name, k in keep.items():
        assert np.all(np.asarray(after[name])[..., ~k] == 0), name
        assert np.any(np.asarray(before[name])[..., ~k] > 0), name  # they were alive before
    # The first pruned layer's input is untouched, so its kept channels are bit-identical.
    a1, b1 = np.asarray(after["layer1/block0"]), np.asarray(before["layer1/block0"])
    assert np.array_equal(a1[..., keep["layer1/block0"]], b1[..., keep["layer1/block0"]])

    # Pruning only layer2: layer1 is untouched and layer2's kept channels are unchanged.
    only2 = {"layer2/block0": keep["layer2/block0"]}
    mask2 = attacks.channel_masks_to_param_mask(only2, model.prunable, params)
    _, after2 = model.activations(attacks.apply_mask(params, mask2), state, x)
    assert np.array_equal(after2["layer1/block0"], before["layer1/block0"])
    k2 = keep["layer2/block0"]
    a2, b2 = np.asarray(after2["layer2/block0"]), np.asarray(before["layer2/block0"])
    assert np.array_equal(a2[..., k2], b2[..., k2]) and np.all(a2[..., ~k2] == 0)

    with pytest.raises(KeyError):
        attacks.channel_masks_to_param_mask({"nope": k2}, model.prunable, params)
    with pytest.raises(ValueError, match="channels"):
        attacks.channel_masks_to_param_mask({"layer1/block0": k2}, model.prunable, params)


def test_activation_frequency_on_a_hand_made_example():
    def fake_activations(params, state, x):  # mean 0, std 1: x = pixel / 255
        conv = jnp.stack([x[..., 0] - 0.5, -x[..., 0], 0 * x[..., 0] + params["b"]], -1)
        dense = x.reshape(x.shape[0], -1)[:, :2] - 0.5
        return x.sum(), {"conv": conv, "dense": dense}

    px = np.zeros((5, 2, 2, 1), np.uint8)
    px[0, 0, 0] = px[0, 1, 1] = px[2, 0, 0] = px[4] = 255  # 2 + 1 + 4 = 7 of 20 positions
    freqs = attacks.activation_frequency(
        fake_activations, {"b": jnp.float32(1.0)}, None, px, mean=(0.0,), std=(1.0,), batch_size=2
    )  # 3 batches, the last one padded: padding must not count (channel 2 is always active)
    assert freqs["conv"].dtype == np.float32
    np.testing.assert_allclose(freqs["conv"], [7 / 20, 0.0, 1.0], rtol=1e-6)
    # dense channels are the first two pixels (0,0) and (0,1): active in images 0, 2, 4 / 4.
    np.testing.assert_allclose(freqs["dense"], [3 / 5, 1 / 5], rtol=1e-6)


FREQS = {
    "a": np.array([0.5, 0.1, 0.1, 0.9]),
    "b": np.array([0.2, 0.0, 0.3, 0.1, 0.6, 0.7, 0.8, 0.05]),
}


def _pruned(keep) -> set[tuple[str, int]]:
    return {(k, int(i)) for k, m in keep.items() for i in np.flatnonzero(~m)}


def test_frequency_keep_masks_choose_the_least_active_with_deterministic_ties():
    # Global: 3 of 12; after b1 (0.0) and b7 (0.05) the tie at 0.1 goes to layer "a", channel 1.
    assert _pruned(attacks.frequency_keep_masks(FREQS, 0.25)) == {("b", 1), ("b", 7), ("a", 1)}
    # Per layer: floor(0.25 * 4) = 1 in "a" (tie a1/a2 -> a1), floor(0.25 * 8) = 2 in "b".
    got = attacks.frequency_keep_masks(FREQS, 0.25, scope="layer")
    assert _pruned(got) == {("a", 1), ("b", 1), ("b", 7)}
    # Everything but each layer's most active channel, or everything with min_keep=0.
    assert _pruned(attacks.frequency_keep_masks(FREQS, 1.0)) == (
        {("a", i) for i in (0, 1, 2)} | {("b", i) for i in range(8) if i != 6}
    )
    assert not any(m.any() for m in attacks.frequency_keep_masks(FREQS, 1.0, min_keep=0).values())
    # A layer at its floor hands the rest of the global count to the next candidates.
    got = attacks.frequency_keep_masks({"a": np.zeros(3), "b": np.array([0.5, 0.6, 0.7])}, 0.5)
    assert _pruned(got) == {("a", 0), ("a", 1), ("b", 0)}
    with pytest.raises(ValueError, match="ratio"):
        attacks.frequency_keep_masks(FREQS, 1.5)
    with pytest.raises(ValueError, match="scope"):
        attacks.frequency_keep_masks(FREQS, 0.5, scope="net")


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_frequency_keep_masks_counts_are_monotone_and_nested(scope):
    previous: set = set()
    for ratio in np.linspace(0, 1, 21):
        pruned = _pruned(attacks.frequency_keep_masks(FREQS, float(ratio), scope=scope))
        if scope == "global":
            expect = min(int(np.floor(ratio * 12 + 1e-9)), 12 - 2)
        else:
            expect = min(int(np.floor(ratio * 4 + 1e-9)), 3) + min(
                int(np.floor(ratio * 8 + 1e-9)), 7
            )
        assert len(pruned) == expect, ratio
        assert previous <= pruned
        previous = pruned
    assert _pruned(attacks.frequency_keep_masks(FREQS, 0.0, scope=scope)) == set()


def test_frequency_prune_ratio_zero_is_the_identity(model, victim, data):
    params, state = victim
    pruned, mask = attacks.frequency_prune(
        model.activations, model.prunable, params, state, data[0], mean=MEAN, std=STD, ratio=0.0
    )
    assert all(m.all() for m in jax.tree.leaves(mask))
    _assert_same(pruned, params)
    freqs = attacks.activation_frequency(
        model.activations, params, state, data[0], mean=MEAN, std=STD
    )
    assert {k: v.shape for k, v in freqs.items()} == {"layer1/block0": (4,), "layer2/block0": (8,)}
    assert all(((v >= 0) & (v <= 1)).all() for v in freqs.values())


def test_magnitude_mask_prunes_the_smallest_weights_at_the_exact_fraction():
    rng = np.random.RandomState(0)
    params = {
        "conv": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)},
        "head": {
            "bias": jnp.asarray(rng.normal(size=(3,)) * 1e-3, jnp.float32),
            "kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
        },
    }
    mask = attacks.magnitude_mask(params, 0.3)
    assert mask["head"]["bias"].all()  # 1-D leaves do not compete, however small
    w = np.concatenate([np.abs(np.asarray(params[k]["kernel"])).ravel() for k in ("conv", "head")])
    m = np.concatenate([mask[k]["kernel"].ravel() for k in ("conv", "head")])
    assert (~m).sum() == int(0.3 * 84)  # floor(25.2)
    assert w[~m].max() < w[m].min()
    assert all(x.all() for x in jax.tree.leaves(attacks.magnitude_mask(params, 0.0)))
    head_only = attacks.magnitude_mask(params, 0.5, patterns=["head/kernel"])
    assert (~head_only["head"]["kernel"]).sum() == 6 and head_only["conv"]["kernel"].all()
    pruned = attacks.apply_mask(params, mask)
    assert np.array_equal(np.asarray(pruned["conv"]["kernel"]) != 0, mask["conv"]["kernel"])


# ---------------------------------------------------------------------- perturbation


def test_quantize_error_bound_levels_and_validation():
    rng = np.random.RandomState(1)
    kernel = rng.normal(size=(3, 3, 2, 5)).astype(np.float32)
    kernel[..., 2] = 0.0  # an all-zero output channel must stay zero (no 0/0)
    params = {
        "conv": {"kernel": jnp.asarray(kernel)},
        "bn": {"scale": jnp.asarray(rng.normal(size=5))},
    }
    worst = {}
    for bits in (4, 8):
        q = attacks.quantize(params, bits)
        qmax = 2 ** (bits - 1) - 1
        scale = np.abs(kernel).max(axis=(0, 1, 2)) / qmax
        err = np.abs(np.asarray(q["conv"]["kernel"]) - kernel)
        assert np.all(err <= scale / 2 * (1 + 1e-5) + 1e-12)
        for c in range(5):  # at most 2 * qmax + 1 levels per channel, on the scale's grid
            levels = np.asarray(q["conv"]["kernel"])[..., c].ravel()
            assert len(np.unique(levels)) <= 2 * qmax + 1
        assert np.all(np.asarray(q["conv"]["kernel"])[..., 2] == 0)
        _assert_same(q["bn"], params["bn"])  # 1-D leaves are not quantized by default
        worst[bits] = err.max()
        per_tensor = attacks.quantize(params, bits, per_channel=False)
        err_t = np.abs(np.asarray(per_tensor["conv"]["kernel"]) - kernel)
        assert np.all(err_t <= np.abs(kernel).max() / qmax / 2 * (1 + 1e-5))
    assert worst[8] < worst[4]
    for bad in (1, 17, 4.0, True):
        with pytest.raises(ValueError, match="bits"):
            attacks.quantize(params, bad)


def test_gaussian_noise_is_deterministic_per_key():
    rng = np.random.RandomState(2)
    params = {"k": jnp.asarray(rng.normal(size=(64, 64)) * 3, jnp.float32), "b": jnp.ones(4)}
    a = attacks.gaussian_noise(params, jax.random.key(0), 0.1)
    _assert_same(a, attacks.gaussian_noise(params, jax.random.key(0), 0.1))
    other = attacks.gaussian_noise(params, jax.random.key(1), 0.1)
    assert not np.array_equal(a["k"], other["k"])
    _assert_same(a["b"], params["b"])
    delta = np.asarray(a["k"] - params["k"])
    assert 0.8 < delta.std() / (0.1 * np.asarray(params["k"]).std()) < 1.2  # relative sigma
    absolute = attacks.gaussian_noise(params, jax.random.key(0), 0.1, relative=False)
    assert 0.08 < np.asarray(absolute["k"] - params["k"]).std() < 0.12
    _assert_same(attacks.gaussian_noise(params, jax.random.key(0), 0.0), params)


# ----------------------------------------------------------------------- fine-tuning


def test_ftll_changes_only_the_head(model, victim, data):
    p, s = attacks.ftll(model.apply, *victim, *data, key=jax.random.key(2), epochs=1, **FT)
    changed = _changed(victim[0], p)
    assert changed.pop("['head']['bias']") and changed.pop("['head']['kernel']")
    assert not any(changed.values())
    _assert_same(s, victim[1])  # frozen BatchNorm statistics do not drift


def test_ftal_changes_every_leaf_and_is_deterministic(model, victim, data):
    run = lambda k: attacks.ftal(model.apply, *victim, *data, key=jax.random.key(k), epochs=1, **FT)  # noqa: E731
    p, s = run(3)
    assert all(_changed(victim[0], p).values())
    assert all(_changed(victim[1], s).values())
    p2, s2 = run(3)
    _assert_same(p2, p)
    _assert_same(s2, s)
    assert any(_changed(p, run(4)[0]).values())
    assert not any(x.is_deleted() for x in jax.tree.leaves(victim))  # inputs are not donated


def test_rtll_reinitialises_the_head_even_without_training(model, victim, data):
    kw = {"key": jax.random.key(5), "init_fn": model.init, **FT}
    p0, s0 = attacks.rtll(model.apply, *victim, *data, epochs=0, **kw)
    changed = _changed(victim[0], p0)
    assert changed.pop("['head']['kernel']")  # fresh weights (the fresh bias is zero)
    assert not any(v for k, v in changed.items() if "head" not in k)
    _assert_same(s0, victim[1])
    p1, _ = attacks.rtll(model.apply, *victim, *data, epochs=1, **kw)
    assert all(v == ("head" in k) for k, v in _changed(victim[0], p1).items())
    assert _changed(p0, p1)["['head']['kernel']"]  # and then trained
    with pytest.raises(ValueError, match="init_fn"):
        attacks.finetune(
            model.apply, *victim, *data, key=jax.random.key(0), epochs=1, reinit=["head"], **FT
        )


def test_rtal_changes_every_leaf(model, victim, data):
    p, _ = attacks.rtal(
        model.apply, *victim, *data, init_fn=model.init, key=jax.random.key(6), epochs=1, **FT
    )
    assert all(_changed(victim[0], p).values())


def test_finetune_sweep_equals_separate_runs(model, victim, data):
    kw = {"key": jax.random.key(7), **FT}
    got = attacks.finetune_sweep(model.apply, *victim, *data, strengths=[2, 0, 1], **kw)
    _assert_same(got[1], victim)
    for epochs, snapshot in ((2, got[0]), (1, got[2])):
        _assert_same(snapshot, attacks.finetune(model.apply, *victim, *data, epochs=epochs, **kw))


def test_adaptive_finetune_touches_only_the_turned_layers(model, victim, data):
    with pytest.raises(ValueError, match="layers_to_turn"):
        attacks.adaptive_finetune(
            model.apply, *victim, *data, layers_to_turn=[], key=jax.random.key(8), epochs=3, **FT
        )
    p, s = attacks.adaptive_finetune(
        model.apply,
        *victim,
        *data,
        layers_to_turn=["layer2", "head"],
        key=jax.random.key(8),
        epochs=3,
        **FT,
    )
    for path, changed in _changed(victim[0], p).items():
        assert changed == ("layer2" in path or "head" in path), path
    for path, changed in _changed(victim[1], s).items():
        assert changed == ("layer2" in path), path


def test_fine_prune_keeps_pruned_entries_at_zero(model, victim, data):
    params, state = victim
    x, y = data
    common = {"mean": MEAN, "std": STD, "ratio": 0.5}
    pruned, mask = attacks.frequency_prune(
        model.activations, model.prunable, params, state, x, **common
    )
    p, s = attacks.fine_prune(
        model.apply,
        model.activations,
        model.prunable,
        params,
        state,
        x,
        y,
        key=jax.random.key(9),
        epochs=1,
        lr=LR,
        batch_size=BS,
        **common,
    )
    n_pruned = 0
    for w, m in zip(_leaves(p), jax.tree.leaves(mask), strict=True):
        assert np.all(w[~m] == 0)
        n_pruned += int((~m).sum())
    assert n_pruned > 0 and any(_changed(pruned, p).values())
    _, acts = model.activations(
        p, s, jnp.asarray(np.random.RandomState(0).normal(size=(4, 8, 8, 1)))
    )
    keep = attacks.frequency_keep_masks(
        attacks.activation_frequency(model.activations, params, state, x, mean=MEAN, std=STD), 0.5
    )
    assert sum(int((~k).sum()) for k in keep.values()) == 6  # floor(0.5 * 12)
    for name, k in keep.items():
        assert np.all(np.asarray(acts[name])[..., ~k] == 0)


def test_pruned_weights_stay_zero_although_their_gradients_are_not(model, victim, data):
    # Unstructured pruning leaves live gradients on the zeroed weights (unlike whole channels,
    # which the ResNet's BatchNorm silences): only masking the updates keeps them at zero.
    keep = attacks.magnitude_mask(victim[0], 0.5)
    p, _ = attacks.finetune(
        model.apply, *victim, *data, key=jax.random.key(9), epochs=1, prune_keep=keep, **FT
    )
    zeroed = attacks.apply_mask(victim[0], keep)
    plain, _ = attacks.ftal(
        model.apply, zeroed, victim[1], *data, key=jax.random.key(9), epochs=1, **FT
    )
    regrown = 0
    for w, w_plain, m in zip(_leaves(p), _leaves(plain), jax.tree.leaves(keep), strict=True):
        assert np.all(w[~m] == 0)
        regrown += int(np.count_nonzero(w_plain[~m]))
    assert regrown > 0  # without the mask these weights would have moved


# ---------------------------------------------------------------------- distillation


@pytest.mark.parametrize("soft", [True, False])
def test_distill_student_agrees_with_the_teacher_without_labels(model, victim, predict, soft):
    assert "labels" not in inspect.signature(attacks.distill).parameters
    x, _ = _make_data(128, 11)  # attacker images: unlabelled, disjoint from the victim's data
    p, s = attacks.distill(
        model.apply,
        *victim,
        model.init,
        model.apply,
        x,
        mean=MEAN,
        std=STD,
        key=jax.random.key(10),
        epochs=12,
        soft=soft,
        lr=LR,
        batch_size=BS,
    )
    assert not any(a.is_deleted() for a in jax.tree.leaves(victim))
    test_x, _ = _make_data(64, 12)
    agree = np.mean(np.argmax(predict(p, s, test_x), -1) == np.argmax(predict(*victim, test_x), -1))
    assert agree > 0.5, agree


def test_distill_strengths_share_one_compiled_epoch(model, victim):
    # The distillation epoch comes from the engine's cache (jaxwm.engine.compiled) and its
    # schedule numbers live in the optimizer state: another strength or rate compiles nothing.
    x, _ = _make_data(64, 13)
    kw = dict(mean=MEAN, std=STD, key=jax.random.key(3), batch_size=BS, soft=False)
    attacks.distill(model.apply, *victim, model.init, model.apply, x, epochs=1, lr=LR, **kw)
    with compile_stats.CompileStats() as stats:
        attacks.distill(model.apply, *victim, model.init, model.apply, x, epochs=2, lr=2 * LR, **kw)
    assert stats.compilations == 0, dict(stats.by_function)


def test_adaptive_attacker_replays_embeddings_schedule_when_epochs_lt_layers(model, victim, data):
    # One schedule (jaxwm.embed): with 1 epoch and 2 layers, embedding trains both in that epoch,
    # so the attacker who replays Algorithm 1 must too (0.1's own copy trained only the head).
    assert embed.unfrozen_per_epoch(["layer2", "head"], 1) == [("head", "layer2")]
    p, _ = attacks.adaptive_finetune(
        model.apply, *victim, *data, layers_to_turn=["layer2", "head"], key=jax.random.key(8),
        epochs=1, **FT,
    )  # fmt: skip
    changed = _changed(victim[0], p)
    assert any(c for path, c in changed.items() if "layer2" in path)
    assert not any(c for path, c in changed.items() if "layer1" in path)


# ------------------------------------------------------- pruning scopes and Liu et al.


def test_scope_units_name_block_stream_and_penultimate_units(model):
    assert attacks.scope_units("block", model.prunable, model.unit_scopes) == list(model.prunable)
    every = attacks.scope_units("all", model.prunable, model.unit_scopes)
    assert sorted(every) == ["layer1/block0", "layer1/stream", "layer2/block0", "layer2/stream"]
    assert attacks.scope_units("penultimate", model.prunable, model.unit_scopes) == ["features"]
    assert set(model.unit_prunable) == set(model.unit_scopes)
    with pytest.raises(ConfigError, match="prune_scope='all' needs a model"):
        attacks.scope_units("all", model.prunable, None)  # an adapter's model: block units only
    with pytest.raises(ConfigError, match="prune_scope must be one of"):
        attacks.scope_units("stem", model.prunable, model.unit_scopes)


def test_per_layer_ranking_over_every_conv_output_silences_the_stream_exactly(model, victim, data):
    params, state = victim
    names = attacks.scope_units("all", model.prunable, model.unit_scopes)
    freqs = attacks.activation_frequency(model.units, params, state, data[0], mean=MEAN, std=STD)
    keep = attacks.frequency_keep_masks({k: freqs[k] for k in names}, 0.5, scope="layer")
    # The same fraction in each layer: half of 4, 4, 8 and 8 channels.
    assert {k: int((~v).sum()) for k, v in keep.items()} == {
        "layer1/block0": 2, "layer1/stream": 2, "layer2/block0": 4, "layer2/stream": 4,
    }  # fmt: skip
    mask = attacks.channel_masks_to_param_mask(keep, model.unit_prunable, params)
    assert not mask["stem"]["conv"]["kernel"].all()  # the stem is part of layer1's stream
    x = jnp.asarray(np.random.RandomState(4).normal(size=(8, 8, 8, 1)), jnp.float32)
    units = jax.jit(model.units)
    _, before = units(params, state, x)
    _, after = units(attacks.apply_mask(params, mask), state, x)
    for name, k in keep.items():
        assert np.all(np.asarray(after[name])[..., ~k] == 0), name
        assert np.any(np.asarray(before[name])[..., ~k] > 0), name
    # The block-internal table is the one activations() reports; units() adds the others.
    _, acts = model.activations(params, state, x)
    assert set(acts) == set(model.prunable) and set(acts) < set(before)


def test_penultimate_scope_touches_only_the_heads_input_rows(model, victim, data):
    params, state = victim
    names = attacks.scope_units("penultimate", model.prunable, model.unit_scopes)
    freqs = attacks.activation_frequency(model.units, params, state, data[0], mean=MEAN, std=STD)
    keep = attacks.frequency_keep_masks({k: freqs[k] for k in names}, 0.5)
    mask = attacks.channel_masks_to_param_mask(keep, model.unit_prunable, params)
    pruned = attacks.apply_mask(params, mask)
    changed = {k for k, v in _changed(params, pruned).items() if v}
    assert changed == {"['head']['kernel']"}
    rows = np.all(np.asarray(pruned["head"]["kernel"]) == 0, axis=1)
    assert np.array_equal(rows, ~keep["features"]) and rows.sum() == 4  # floor(0.5 * 8)


def test_liu_prune_stops_at_the_stated_accuracy_drop(model, victim, data):
    params, state = victim
    x, y = data
    layer = attacks.default_layer(model.prunable)
    assert layer == "layer2/block0"  # the last block-internal convolution output
    ranks = np.argsort(
        attacks.mean_activation(model.activations, params, state, x, mean=MEAN, std=STD)[layer],
        kind="stable",
    )
    counts = []
    for drop in (0.0, 0.04, 1.0):
        p, mask, info = attacks.liu_prune(
            model.apply, model.activations, model.prunable, params, state, x, y,
            layer=layer, max_drop=drop, mean=MEAN, std=STD,
        )  # fmt: skip
        n, base, accs = info["pruned"], info["base_accuracy"], info["accuracies"]
        assert all(base - a <= drop + 1e-9 for a in accs[:n])  # every kept step within it
        if n < info["channels"] - 1:
            assert base - accs[n] > drop  # one more channel would exceed the threshold
            assert len(accs) == n + 1  # and pruning stopped there
        gone = ~mask["layer2"]["block0"]["bn1"]["scale"]
        assert np.array_equal(np.flatnonzero(gone), np.sort(ranks[:n]))  # least active first
        acc = float(train.make_eval(model.apply, MEAN, STD)(p, state, x, y))
        assert acc == (accs[n - 1] if n else base)
        counts.append(n)
    assert counts[0] <= counts[1] <= counts[2] == 7  # a larger threshold prunes more
    assert counts[0] < 7  # the stopping rule did stop somewhere


def test_liu_fine_prune_keeps_its_pruned_channels_at_zero(model, victim, data):
    params, state = victim
    p, s, info = attacks.liu_fine_prune(
        model.apply, model.activations, model.prunable, params, state, *data,
        layer="layer2/block0", max_drop=1.0, key=jax.random.key(9), epochs=1, **FT,
    )  # fmt: skip
    assert info["pruned"] == 7
    _, acts = model.activations(
        p, s, jnp.asarray(np.random.RandomState(0).normal(size=(4, 8, 8, 1)))
    )
    a = np.asarray(acts["layer2/block0"])
    assert int(np.sum(np.all(a == 0, axis=(0, 1, 2)))) >= 7
    assert any(_changed(params, p).values())
    with pytest.raises(ConfigError, match="liu_layer='nope'"):
        attacks.liu_prune(model.apply, model.activations, model.prunable, params, state, *data,
                          layer="nope", max_drop=0.04, mean=MEAN, std=STD)  # fmt: skip
