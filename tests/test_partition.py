"""Path-pattern selection and freezing (table-driven)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxwm.engine import partition
from jaxwm.errors import PatternError

PARAMS = {
    "stem": {"conv": {"kernel": jnp.ones((3, 3, 1, 2))}, "bn": {"scale": jnp.ones(2)}},
    "layer1": {"block0": {"conv1": {"kernel": jnp.ones((3, 3, 2, 2))}}},
    "layer10": {"block0": {"conv1": {"kernel": jnp.ones((3, 3, 2, 2))}}},
    "head": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)},
}


def test_tree_paths():
    assert partition.tree_paths(PARAMS) == [
        "head/bias",
        "head/kernel",
        "layer1/block0/conv1/kernel",
        "layer10/block0/conv1/kernel",
        "stem/bn/scale",
        "stem/conv/kernel",
    ]


@pytest.mark.parametrize(
    "patterns,trained",
    [
        (["head"], {"head/bias", "head/kernel"}),
        (["layer1"], {"layer1/block0/conv1/kernel"}),  # a subtree, not a prefix: not layer10
        (["layer1.*"], {"layer1/block0/conv1/kernel", "layer10/block0/conv1/kernel"}),
        (["head/kernel", "stem/.*"], {"head/kernel", "stem/bn/scale", "stem/conv/kernel"}),
        ([".*/conv1"], {"layer1/block0/conv1/kernel", "layer10/block0/conv1/kernel"}),
    ],
)
def test_trainable_mask_table(patterns, trained):
    mask = partition.trainable_mask(PARAMS, patterns, log_table=False)
    got = {p for p, m in zip(partition.tree_paths(PARAMS), jax.tree.leaves(mask), strict=True) if m}
    assert got == trained


def test_first_match_wins():
    labels = partition.match_labels(
        PARAMS, [("head/bias", "a"), ("head", "b"), (".*", "c")], log_table=False
    )
    assert labels["head"] == {"bias": "a", "kernel": "b"}
    assert labels["stem"]["bn"]["scale"] == "c"


@pytest.mark.parametrize(
    "rules,message",
    [
        ([("head", "x")], "match no pattern"),
        ([("haed", "x"), (".*", "y")], "'haed'.*match no parameter"),
        ([("(", "x")], "invalid path pattern"),
    ],
)
def test_pattern_errors(rules, message):
    with pytest.raises(PatternError, match=message):
        partition.match_labels(PARAMS, rules, log_table=False)


def test_match_table_is_logged(caplog):
    with caplog.at_level("INFO", logger="jaxwm.engine.partition"):
        partition.trainable_mask(PARAMS, ["head"])
    assert "pattern" in caplog.text and "head" in caplog.text and "freeze" in caplog.text


def test_masked_optimizer_gives_exact_zero_updates_with_weight_decay():
    mask = partition.trainable_mask(PARAMS, ["head"], log_table=False)
    tx = partition.masked(optax.chain(optax.add_decayed_weights(0.1), optax.sgd(1.0, 0.9)), mask)
    state = tx.init(PARAMS)
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    updates, _ = tx.update(grads, state, PARAMS)
    for m, u in zip(jax.tree.leaves(mask), jax.tree.leaves(updates), strict=True):
        assert bool(jnp.all(u == 0)) != bool(m)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class _CallableNet:
    """A pytree whose class defines ``__call__``, like an Equinox module."""

    w: jax.Array
    b: jax.Array

    def __call__(self, x):
        return x @ self.w + self.b


def test_masked_optimizer_accepts_a_callable_parameter_pytree():
    # optax.partition takes a callable param_labels for a function of the params: handing it
    # a callable label pytree made it call the labels on the params (a TypeError).
    params = _CallableNet(jnp.ones((2, 3)), jnp.ones(3))
    mask = partition.trainable_mask(params, ["b"], log_table=False)
    assert isinstance(mask, _CallableNet) and callable(mask)
    tx = partition.masked(optax.sgd(1.0), mask)
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    np.testing.assert_array_equal(updates.w, np.zeros((2, 3)))
    np.testing.assert_array_equal(updates.b, -np.ones(3))


def test_split_merge_roundtrip_and_frozen_modules():
    mask = partition.trainable_mask(PARAMS, ["head", "stem/bn"], log_table=False)
    t, f = partition.split(PARAMS, mask)
    assert t["stem"]["conv"]["kernel"] is None and f["head"]["kernel"] is None
    merged = partition.merge(t, f, mask)
    jax.tree.map(np.testing.assert_array_equal, merged, PARAMS)
    assert partition.frozen_modules(mask) == (
        "layer1/block0/conv1",
        "layer10/block0/conv1",
        "stem/conv",
    )


def test_state_mask():
    state = {"stem": {"bn": {"mean": 0.0}}, "layer1": {"block0": {"bn1": {"mean": 0.0}}}}
    got = partition.state_mask(state, ("stem",))
    assert got == {"stem": {"bn": {"mean": True}}, "layer1": {"block0": {"bn1": {"mean": False}}}}
