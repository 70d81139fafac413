"""The ResNet: shapes, parameter count, readable paths, the frozen-BN hint, activations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxwm import models


def test_resnet18_parameter_count_and_paths():
    m = models.resnet18(10)
    # eval_shape: no FLOPs, just the structure (a real init of ResNet18 is slow on CPU).
    params, state = jax.eval_shape(m.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    assert models.count_params(params) == 11_173_962
    assert set(params) == {"stem", "layer1", "layer2", "layer3", "layer4", "head"}
    assert set(params["layer2"]["block0"]) == {
        "conv1",
        "bn1",
        "conv2",
        "bn2",
        "proj_conv",
        "proj_bn",
    }
    assert "proj_conv" not in params["layer1"]["block0"]
    assert params["head"]["kernel"].shape == (512, 10)
    assert set(state["layer4"]["block1"]["bn2"]) == {"mean", "var"}


@pytest.mark.parametrize("channels,classes,size", [(1, 10, 28), (3, 100, 32), (3, 10, 8)])
def test_resnet18_any_channels_and_classes(channels, classes, size):
    m = models.resnet18(classes)
    params, _ = jax.eval_shape(m.init, jax.random.key(0), jnp.zeros((1, size, size, channels)))
    assert params["stem"]["conv"]["kernel"].shape == (3, 3, channels, 64)
    out = jax.eval_shape(
        lambda p, s, x: m.apply(p, s, x)[0],
        params,
        jax.eval_shape(m.init, jax.random.key(0), jnp.zeros((1, size, size, channels)))[1],
        jnp.zeros((5, size, size, channels)),
    )
    assert out.shape == (5, classes)


@pytest.fixture(scope="module")
def tiny():
    m = models.resnet(4, stage_sizes=(1, 1), widths=(4, 8))
    params, state = m.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    return m, params, state


def test_train_mode_updates_stats_except_frozen(tiny):
    m, params, state = tiny
    x = jax.random.normal(jax.random.key(1), (16, 8, 8, 3)) * 3 + 1
    _, new = m.apply(params, state, x, train=True, frozen=("stem", "layer1/block0/bn1"))
    same = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), state, new)
    assert same["stem"]["bn"] == {"mean": True, "var": True}
    assert same["layer1"]["block0"]["bn1"] == {"mean": True, "var": True}
    assert same["layer1"]["block0"]["bn2"] == {"mean": False, "var": False}
    assert same["layer2"]["block0"]["proj_bn"] == {"mean": False, "var": False}


def test_frozen_bn_computes_inference_mode(tiny):
    """A fully frozen model in train mode computes exactly its inference-mode output."""
    m, params, state = tiny
    x = jax.random.normal(jax.random.key(2), (8, 8, 8, 3))
    everything = ("stem", "layer1", "layer2", "head")
    train_logits, _ = m.apply(params, state, x, train=True, frozen=everything)
    eval_logits, _ = m.apply(params, state, x, train=False)
    np.testing.assert_array_equal(train_logits, eval_logits)
    batch_logits, _ = m.apply(params, state, x, train=True)
    assert not np.allclose(batch_logits, eval_logits)


def test_activations_and_prunable_table(tiny):
    m, params, state = tiny
    x = jax.random.normal(jax.random.key(3), (2, 8, 8, 3))
    logits, acts = m.activations(params, state, x)
    np.testing.assert_allclose(logits, m.apply(params, state, x)[0], rtol=1e-6)
    assert {k: v.shape for k, v in acts.items()} == {
        "layer1/block0": (2, 8, 8, 4),
        "layer2/block0": (2, 4, 4, 8),
    }
    assert all(float(a.min()) >= 0 for a in acts.values())  # post-ReLU
    for name, slices in m.prunable.items():
        for path, axis in slices:
            leaf = params
            for k in path.split("/"):
                leaf = leaf[k]
            assert leaf.shape[axis] == acts[name].shape[-1]


def test_bfloat16_compute_keeps_fp32_params():
    m = models.resnet(4, stage_sizes=(1,), widths=(4,), dtype="bfloat16")
    params, state = m.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("float32")}
    logits, _ = m.apply(params, state, jnp.ones((2, 8, 8, 3)), train=True)
    assert logits.dtype == jnp.float32


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"stage_sizes": (1, 1), "widths": (4,)}, "model.stage_sizes"),
        ({"dtype": "int8"}, "model.dtype"),
    ],
)
def test_bad_model_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        models.resnet(10, **kwargs)
