"""Linen, NNX and Equinox networks through jaxwm.adapters, end to end.

Each test runs the README's block for its framework, then the README's shared block (partitioned
embedding, verification, FTLL, activation-frequency pruning) on a tiny network and 8x8 synthetic
images, and checks what came out: the watermarked model is owned and the original is not,
embedding and FTLL touch only their layers, pruning removes the stated fraction of channels and
those channels never fire again, and ``rebuild`` gives the framework's own object computing the
same function.
"""

import contextlib
import io
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxwm import attacks, triggers
from jaxwm.adapters import common
from jaxwm.adapters.nnx import from_nnx
from jaxwm.engine import partition
from jaxwm.errors import ModelError

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "### Your Flax Linen, Flax NNX or Equinox network"
LINEN, NNX, EQUINOX, USAGE = range(4)


def _blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 4, "the README section has one block per framework, then the usage"
    return blocks


def _run_readme(framework: int, monkeypatch) -> tuple[dict, str]:
    # A fixed secret: the README draws a fresh one, the test needs the same run every time.
    monkeypatch.setattr(triggers, "generate_secret", lambda: "adapters-test-secret")
    ns = {"__name__": "readme_adapters"}
    out = io.StringIO()
    blocks = _blocks()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[framework], "README.md", "exec"), ns)
        exec(compile(blocks[USAGE], "README.md", "exec"), ns)
    return ns, out.getvalue()


def _by_path(tree) -> dict:
    return dict(zip(partition.tree_paths(tree), jax.tree.leaves(tree), strict=True))


def _changed(before, after) -> set[str]:
    a, b = _by_path(before), _by_path(after)
    assert a.keys() == b.keys()
    return {p for p in a if not np.array_equal(np.asarray(a[p]), np.asarray(b[p]))}


def _channel_keep(mask, prunable) -> dict[str, np.ndarray]:
    """Per prunable layer, which channels the parameter mask keeps (any entry kept)."""
    leaves = _by_path(mask)
    keep = {}
    for name, slices in prunable.items():
        path, axis = slices[0]
        m = np.moveaxis(np.asarray(leaves[path]), axis, 0)
        keep[name] = m.reshape(m.shape[0], -1).any(axis=1)
    return keep


def _check_end_to_end(ns: dict, out: str, native_logits) -> None:
    adapted, params, state, ds = ns["adapted"], ns["params"], ns["state"], ns["ds"]
    model, verdict = adapted.model, ns["verdict"]
    norm = dict(mean=ds.mean, std=ds.std)

    # Embedding: the watermark is in, and only the layers listed were trained.
    assert out.startswith("owned:"), out
    owned = verdict(params, state)
    assert owned.owned and owned.retention >= 0.75, owned.reason
    innocent = verdict(adapted.params, adapted.state)
    assert not innocent.owned and innocent.retention <= 0.5, innocent.reason
    touched = _changed(adapted.params, params)
    assert touched and all(p.startswith(("hidden/", "head/")) for p in touched), touched
    assert not _changed(adapted.state, state)  # bn_mode="inference": statistics untouched

    # FTLL: the head moves, everything else (BatchNorm statistics too) is bit-identical, and
    # two epochs at a small learning rate leave most of the watermark.
    ft_params, ft_state = ns["finetuned"]
    touched = _changed(params, ft_params)
    assert touched and all(p.startswith("head/") for p in touched), touched
    assert not _changed(state, ft_state)
    assert verdict(ft_params, ft_state).retention >= 0.5

    # Pruning: floor(ratio x channels) channels go, each exactly zero, and never fire again.
    keep = _channel_keep(ns["mask"], model.prunable)
    total = sum(k.size for k in keep.values())
    assert sum(int((~k).sum()) for k in keep.values()) == total // 2
    pruned = _by_path(ns["pruned"])
    for name, slices in model.prunable.items():
        for path, axis in slices:
            gone = np.take(np.asarray(pruned[path]), np.flatnonzero(~keep[name]), axis=axis)
            assert not gone.any(), path
    freqs = attacks.activation_frequency(
        model.activations, ns["pruned"], state, ds.train_images, **norm
    )
    assert set(freqs) == set(model.prunable)
    for name, k in keep.items():
        assert np.all(freqs[name][~k] == 0) and freqs[name][k].max() > 0, name
    assert 0.0 <= verdict(ns["pruned"], state).retention <= 1.0

    # rebuild: the framework's own object computes the watermarked function. (Jitted, at the
    # shape the README's compiled `logits` already has: fewer compilations.)
    x = jnp.asarray(ds.normalize(ds.train_images))
    native = jax.jit(lambda x: native_logits(ns["watermarked"], x))(x)
    np.testing.assert_allclose(native, ns["logits"](params, state, x), atol=1e-5)


def test_linen_network_end_to_end(monkeypatch):
    ns, out = _run_readme(LINEN, monkeypatch)
    net = ns["net"]
    _check_end_to_end(ns, out, lambda variables, x: net.apply(variables, x))
    assert set(ns["watermarked"]) == {"params", "batch_stats"}


def test_nnx_network_end_to_end(monkeypatch):
    ns, out = _run_readme(NNX, monkeypatch)
    ns["watermarked"].eval()  # outside jit: NNX refuses mutation from inside a trace
    _check_end_to_end(ns, out, lambda module, x: module(x))
    model, params, state = ns["adapted"].model, ns["params"], ns["state"]
    assert isinstance(ns["watermarked"], nnx.Module)
    x = jnp.asarray(ns["ds"].normalize(ns["ds"].train_images[:16]))
    # Training mode under jit updates BatchNorm's statistics (no TraceContextError), unless
    # the frozen hint names it: then it runs in inference mode.
    _, new_state = jax.jit(lambda p, s, x: model.apply(p, s, x, train=True))(params, state, x)
    assert _changed(state, new_state) == {"bn1/mean", "bn1/var"}
    _, kept = jax.jit(lambda p, s, x: model.apply(p, s, x, train=True, frozen=("bn1",)))(
        params, state, x
    )
    assert not _changed(state, kept)
    fresh, fresh_state = model.init(jax.random.key(5), x[:1])
    assert {p for p in _by_path(params) if p.endswith("kernel")} <= _changed(params, fresh)
    assert jax.tree.structure(fresh_state) == jax.tree.structure(state)


def test_equinox_network_end_to_end(monkeypatch):
    eqx = pytest.importorskip(
        "equinox", reason="equinox is an optional extra: pip install .[equinox]"
    )
    ns, out = _run_readme(EQUINOX, monkeypatch)
    _check_end_to_end(
        ns, out, lambda module, x: jax.vmap(module)(jnp.transpose(jnp.asarray(x), (0, 3, 1, 2)))
    )
    assert isinstance(ns["watermarked"], eqx.Module)
    assert sorted(_by_path(ns["params"])) == [
        f"{layer}/{leaf}" for layer in ("conv1", "head", "hidden") for leaf in ("bias", "weight")
    ]


def test_prune_layers_table_and_errors():
    params = {
        "conv1": {"kernel": jnp.ones((3, 3, 1, 4)), "bias": jnp.ones(4)},
        "bn1": {"scale": jnp.ones(4), "bias": jnp.ones(4)},
        "head": {"kernel": jnp.ones((4, 2))},
    }
    axes = {"kernel": -1, "bias": 0, "scale": 0}
    assert common.prunable_table(params, ["conv1", "bn1"], axes) == {
        "conv1": (("conv1/kernel", 3), ("conv1/bias", 0)),
        "bn1": (("bn1/bias", 0), ("bn1/scale", 0)),
    }
    table = {"conv1": (("conv1/kernel", -1), ("bn1/scale", 0))}
    assert common.prunable_table(params, table, axes) == {
        "conv1": (("conv1/kernel", 3), ("bn1/scale", 0))
    }
    with pytest.raises(ModelError, match=r"'conv2' is not a layer.*\['bn1', 'conv1', 'head'\]"):
        common.prunable_table(params, ["conv2"], axes)
    with pytest.raises(ModelError, match="channels"):
        common.prunable_table(params, {"conv1": (("conv1/kernel", 3), ("head/kernel", 1))}, axes)
    with pytest.raises(ModelError, match="list of layer paths"):
        common.prunable_table(params, "conv1", axes)


def test_nnx_and_equinox_init_without_factory_says_what_to_pass():
    adapted = from_nnx(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    with pytest.raises(ModelError, match="init=lambda key"):
        adapted.model.init(jax.random.key(0), jnp.zeros((1, 2)))
    eqx = pytest.importorskip("equinox", reason="equinox is an optional extra")
    from jaxwm.adapters.equinox import from_equinox

    adapted = from_equinox(eqx.nn.Linear(2, 3, key=jax.random.key(0)), layout="HWC")
    with pytest.raises(ModelError, match="needs init="):
        adapted.model.init(jax.random.key(0), jnp.zeros((1, 2)))
    with pytest.raises(ModelError, match="layout"):
        from_equinox(eqx.nn.Linear(2, 3, key=jax.random.key(0)), layout="NCHW")
