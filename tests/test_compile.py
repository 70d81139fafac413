"""Compilation and host syncs: what fit compiles and when, the persistent cache, CompileStats."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_runs import launch

from jaxwm import attacks, data, models
from jaxwm.engine import compile_stats, compiled, loop, optim, train
from jaxwm.engine.hparams import Hparams
from jaxwm.errors import ConfigError
from jaxwm.runner import config

SMALL = [  # a whole pipeline: victim, partitioned embedding (2 stages), verification
    "--config=configs/demo.py",
    "--config.mode=pipeline",
    "--config.pipeline.methods=('partitioned',)",
    "--config.watermark.secret=",  # the key comes from JAXWM_SECRET (launch sets it)
    "--config.watermark.size=16",
    "--config.embed.epochs=4",
    "--config.embed.batch_size=16",
    "--config.embed.layers_to_turn=('layer2','head')",
    "--config.data.source=synthetic:train=256,test=64,classes=4",
    "--config.model.stage_sizes=(1,1)",
    "--config.model.widths=(8,16)",
    "--config.train.epochs=2",
    "--config.train.batch_size=32",
    "--config.progress=False",
    "--config.compile_cache_min_s=0",
]


@pytest.fixture(scope="module")
def toy():
    ds = data.load_dataset("synthetic:train=256,test=64,classes=4")
    return ds, models.resnet(4, stage_sizes=(1, 1), widths=(4, 8))


def test_compile_stats_counts_only_inside_its_window():
    f = jax.jit(lambda x: jnp.sin(x) * 2)
    a, b = np.ones(3, np.float32), np.ones(4, np.float32)
    with compile_stats.CompileStats() as stats:
        f(a)
        f(a)  # same shape: no new compilation
        f(b)
    assert stats.compilations == 2
    assert stats.compile_s > 0
    jax.jit(lambda x: x + 1)(b)  # after the window: not counted
    assert stats.compilations == 2
    assert "2 XLA compilations" in str(stats)
    slowest = stats.as_dict()["slowest"]
    assert [r["n"] for r in slowest] == [2] and slowest[0]["s"] > 0  # one jitted function


def test_fit_compiles_only_before_and_in_its_first_epoch(toy, monkeypatch):
    ds, model = toy
    seen, setup = [], []  # compilations so far at the start of each epoch; setup's by name
    real = train.epoch_permutation

    def spy(*args):
        if not seen:
            setup.append(dict(stats.by_function))
        seen.append(stats.compilations)
        return real(*args)

    monkeypatch.setattr(train, "epoch_permutation", spy)
    compiled.clear()  # earlier tests may have compiled this model already
    jax.clear_caches()
    hp = Hparams(epochs=3, batch_size=32, steps_per_call=4, eval_every=1)
    with compile_stats.CompileStats() as stats:
        loop.fit(model.init, model.apply, ds, hp, progress=False)
    assert len(seen) == 3
    # The model's initialisation is one compiled call: no single-op convolution (an eager
    # ResNet init compiles one per layer shape, ~100 programs in all for ResNet18).
    assert setup[0].get("jit(init)") == 1, setup[0]
    assert "jit(conv_general_dilated)" not in setup[0], setup[0]
    assert seen[0] <= 30, setup[0]
    # Epoch 1 compiles the step and the evaluation; later epochs reuse them.
    assert seen[1] > seen[0]
    assert seen[2] == seen[1] == stats.compilations, (seen, stats.compilations)


def test_fit_fetches_metrics_once_per_chunk_not_per_step(toy, monkeypatch):
    ds, model = toy
    fetched = []
    real = jax.device_get

    def spy(x):
        fetched.append(x)
        return real(x)

    monkeypatch.setattr(jax, "device_get", spy)
    # 256 examples / batch 32 = 8 steps per epoch, in chunks of 4 steps: 2 fetches per epoch.
    hp = Hparams(epochs=2, batch_size=32, steps_per_call=4, eval_every=0)
    loop.fit(model.init, model.apply, ds, hp, progress=False)
    assert len(fetched) == 2 * 2
    assert all(set(m) == {"loss_sum", "correct", "count"} for m in fetched)


def test_scanned_chunk_has_no_host_callbacks(toy):
    ds, model = toy
    tx = optim.make_optimizer(peak_lr=0.1, total_steps=8)
    ts = train.init_train_state(model.init, tx, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    step = train.make_train_step(model.apply, tx, ds.mean, ds.std)
    run = train.make_train_chunk(step, 32, 4, host_loop=False)  # the GPU/TPU path
    perm = train.epoch_permutation(jax.random.key(1), 256, 0)
    images, labels = jnp.asarray(ds.train_images), jnp.asarray(ds.train_labels)
    text = run.lower(ts, images, labels, perm, 0).as_text()
    assert "callback" not in text  # no host round trip inside the chunk


def test_second_run_even_with_other_epochs_and_rates_hits_the_persistent_cache(tmp_path):
    cache = tmp_path / "xla"
    stats = []
    # The second run is longer and uses other learning rates: those numbers live in the
    # optimizer state (jaxwm.engine.optim), so they do not change any compiled program.
    other = ["--config.train.epochs=3", "--config.train.peak_lr=0.2", "--config.embed.lr=0.01"]
    for run, extra in (("first", []), ("second", other)):
        wd = tmp_path / run
        proc = launch(*SMALL, *extra, f"--config.compile_cache={cache}", f"--workdir={wd}")
        assert "compilation:" in proc.stderr
        stats.append(json.loads((wd / "compile_stats.json").read_text()))
    first, second = stats
    assert first["cache_writes"] > 10, first
    # Every compilation of the second run, embedding stages included, comes from the cache.
    assert second["cache_writes"] == 0, second
    assert second["cache_hits"] == second["compilations"] > 10, second
    assert second["compile_s"] < first["compile_s"] / 3, (first, second)


def test_compile_cache_threshold_is_validated(tmp_path):
    c = config.defaults()
    c.compile_cache_min_s = -1.0
    with pytest.raises(ConfigError, match="compile_cache_min_s"):
        config.validate(c)
    with pytest.raises(ValueError, match="min_compile_s"):
        compile_stats.enable_persistent_cache(tmp_path, -1.0)


def test_init_is_deterministic_per_key(toy):
    _, model = toy
    tx = optim.make_optimizer(peak_lr=0.1, total_steps=8)
    a = train.init_train_state(model.init, tx, jax.random.key(3), jnp.zeros((1, 8, 8, 3)))
    b = train.init_train_state(model.init, tx, jax.random.key(3), jnp.zeros((1, 8, 8, 3)))
    c = train.init_train_state(model.init, tx, jax.random.key(4), jnp.zeros((1, 8, 8, 3)))
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.params["head"]["kernel"], c.params["head"]["kernel"])


def test_fits_differing_only_in_seed_share_one_compilation(toy):
    ds, model = toy
    hp = Hparams(epochs=1, batch_size=32, steps_per_call=4)
    first = loop.fit(model.init, model.apply, ds, hp, seed=0, progress=False)
    with compile_stats.CompileStats() as stats:
        second = loop.fit(model.init, model.apply, ds, hp, seed=1, progress=False)
    assert stats.by_function.get("jit(one)", 0) == 0, dict(stats.by_function)
    assert stats.by_function.get("jit(init)", 0) == 0, dict(stats.by_function)
    a, b = first.state.params["head"]["kernel"], second.state.params["head"]["kernel"]
    assert not np.array_equal(a, b)  # still two different runs


def test_fits_differing_in_length_and_learning_rate_share_one_compilation(toy):
    ds, model = toy
    hp = Hparams(epochs=1, batch_size=32, steps_per_call=4, peak_lr=0.1)
    loop.fit(model.init, model.apply, ds, hp, seed=0, progress=False)
    longer = Hparams(epochs=2, batch_size=32, steps_per_call=4, peak_lr=0.3, warmup_epochs=1)
    with compile_stats.CompileStats() as stats:
        loop.fit(model.init, model.apply, ds, longer, seed=0, progress=False)
    assert stats.by_function.get("jit(one)", 0) == 0, dict(stats.by_function)


def test_compiled_cache_keys_on_builder_and_static_args_and_is_bounded(monkeypatch):
    built = []

    @compiled.cached
    def scaled(factor, *, offset=0.0):
        built.append((factor, offset))
        return jax.jit(lambda x: x * factor + offset)

    @compiled.cached
    def other(factor, *, offset=0.0):
        built.append(("other", factor))
        return jax.jit(lambda x: x - factor)

    assert scaled(2.0) is scaled(2.0)
    assert scaled(2.0, offset=1.0) is not scaled(2.0)
    assert other(2.0) is not scaled(2.0)  # the builder's identity is part of the key
    assert built == [(2.0, 0.0), (2.0, 1.0), ("other", 2.0)]
    monkeypatch.setattr(compiled, "MAX_ENTRIES", 2)
    scaled(3.0)  # evicts the least recently used entries down to the bound
    assert compiled.size() == 2
    n = len(built)
    scaled(2.0)  # recently used: kept
    assert len(built) == n
    scaled(2.0, offset=1.0)  # least recently used: evicted, so built again
    assert built[-1] == (2.0, 1.0) and len(built) == n + 1


def test_weight_attacks_compile_one_program_for_every_strength():
    # Shapes no other test uses, so nothing is compiled for them yet in this process.
    rng = np.random.default_rng(0)
    params = {
        "conv": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 5, 7)), jnp.float32),
                 "bias": jnp.zeros((7,), jnp.float32)},
        "head": {"kernel": jnp.asarray(rng.normal(size=(7, 11)), jnp.float32)},
    }  # fmt: skip
    key = jax.random.key(3)
    with compile_stats.CompileStats() as first:
        attacks.quantize(params, 8)
        attacks.gaussian_noise(params, key, 0.1)
        attacks.apply_mask(params, attacks.magnitude_mask(params, 0.5))
    # One program each (op by op, every op would compile once per leaf shape).
    assert first.compilations == 3, first.by_function
    with compile_stats.CompileStats() as later:
        for bits, sigma, ratio in ((6, 0.3, 0.2), (4, 0.5, 0.9)):
            attacks.quantize(params, bits)
            attacks.gaussian_noise(params, key, sigma)
            attacks.apply_mask(params, attacks.magnitude_mask(params, ratio))
    assert later.compilations == 0, later.by_function
