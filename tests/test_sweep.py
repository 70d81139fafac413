"""Sweeps: vmapped runs == sequential fits; run axis sharded over devices; aggregation."""

import math

import _multidevice
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxwm.engine import loop, sweep
from jaxwm.engine.hparams import Hparams

TOL = 1.0  # _multidevice._max_diff <= 1 means allclose(rtol=1e-4, atol=1e-5)


def test_stack_unstack_roundtrip():
    trees = [{"w": jnp.full((2, 3), float(i)), "n": (jnp.int32(i),)} for i in range(3)]
    stacked = sweep.stack(trees)
    assert stacked["w"].shape == (3, 2, 3) and stacked["n"][0].shape == (3,)
    back = sweep.unstack(stacked, 3)
    for a, b in zip(back, trees, strict=True):
        jax.tree.map(np.testing.assert_array_equal, a, b)
    with pytest.raises(ValueError):
        sweep.stack([])


@pytest.mark.parametrize(
    "values,mean,std,n",
    [
        ([1.0, 2.0, 3.0], 2.0, 1.0, 3),
        ([0.9, 0.9, 0.9, 0.9], 0.9, 0.0, 4),
        (np.array([0.5, 0.7]), 0.6, math.sqrt(0.02), 2),
        ([0.75], 0.75, math.nan, 1),  # one run: sample std undefined
        ([float("nan"), 1.0], math.nan, math.nan, 2),  # a diverged run stays visible
    ],
)
def test_aggregate(values, mean, std, n):
    got = sweep.aggregate(values)
    assert got["n"] == n and isinstance(got["n"], int)
    np.testing.assert_allclose([got["mean"], got["std"]], [mean, std], equal_nan=True)


def test_aggregate_empty_and_format():
    with pytest.raises(ValueError):
        sweep.aggregate([])
    assert sweep.format_stat(sweep.aggregate([0.9, 0.92, 0.94])) == "0.9200 ± 0.0200 (n=3)"


def test_summarize_groups_by_learning_rate():
    def run(lr, seed, acc):
        return sweep.SweepRun(None, acc, [], 0.0, seed=seed, peak_lr=lr)

    runs = [run(0.1, 0, 0.8), run(0.1, 1, 0.9), run(0.2, 0, 0.5), run(0.2, 1, 0.7)]
    rows = sweep.summarize(runs)
    assert [r["peak_lr"] for r in rows] == [0.1, 0.2]
    assert rows[0]["seeds"] == [0, 1]
    np.testing.assert_allclose(rows[1]["test_accuracy"]["mean"], 0.6)
    assert rows[1]["test_accuracy"]["n"] == 2


def test_vmapped_4_seed_sweep_equals_4_sequential_fits():
    ds, model = _multidevice._setup()
    hp = Hparams(epochs=1, batch_size=32, peak_lr=0.05, crop_pad=1, steps_per_call=4)
    seeds = [0, 1, 2, 3]
    runs = sweep.fit_sweep(model.init, model.apply, ds, hp, seeds, progress=False)
    assert [r.seed for r in runs] == seeds and {r.peak_lr for r in runs} == {0.05}
    for r in runs:
        ref = loop.fit(model.init, model.apply, ds, hp, seed=r.seed, progress=False)
        assert _multidevice._max_diff(r.state.params, ref.state.params) <= TOL
        assert _multidevice._max_diff(r.state.state, ref.state.state) <= TOL
        assert int(r.state.step) == int(ref.state.step) == 8
        (row,), (ref_row,) = r.history, ref.history
        np.testing.assert_allclose(row["loss"], ref_row["loss"], rtol=1e-4)
        assert row["train_acc"] == pytest.approx(ref_row["train_acc"])
        assert r.test_accuracy == ref.test_accuracy == row["test_acc"]
    # Different seeds really are different runs.
    assert not np.allclose(
        runs[0].state.params["head"]["kernel"], runs[1].state.params["head"]["kernel"]
    )


@pytest.fixture(scope="module")
def multi():
    out = _multidevice.results()
    assert out["devices"] == 8
    return out


def test_sharded_lr_sweep_equals_sequential_fits(multi):
    r = multi["sweep"]
    assert r["grid"] == [[0.05, 3], [0.05, 0], [0.2, 3], [0.2, 0]]  # lrs outer, seeds inner
    assert set(r["vs_fit"]) == {"0.05/3", "0.2/0"}  # both learning rates checked against fit
    for v in r["vs_fit"].values():
        assert v["params_diff"] <= TOL
        np.testing.assert_allclose(v["loss"][0], v["loss"][1], rtol=1e-4)
        assert v["acc"][0] == v["acc"][1]
    # 4 runs over 8 devices: a 4-device sub-mesh, with a warning.
    assert len(r["warnings"]) == 1 and "using 4 of them" in r["warnings"][0]


def test_sweep_chunk_shards_run_axis(multi):
    assert multi["chunk"]["run_sharded"]  # every leaf: spec P('runs'), one run per device
    assert multi["chunk"]["metrics_shape"] == [8]


def test_run_placement_rules(multi):
    p = multi["placement"]
    assert p["8"] == {"devices": 8, "warned": False}
    assert p["16"] == {"devices": 8, "warned": False}
    assert p["4"] == {"devices": 4, "warned": True}
    assert p["6"] == {"devices": 6, "warned": True}
    assert p["7"] == {"devices": 7, "warned": True}


def test_run_placement_single_device():
    assert sweep.run_placement(5) == (None, None)
