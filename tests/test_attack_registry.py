"""The attack registry: each entry's facts agree with the config, the tables and the plots."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxwm.errors import ConfigError
from jaxwm.runner import attack_registry, config, plots
from jaxwm.runner.attack_tables import stronger, summarize


def test_names_are_unique_and_are_the_default_kinds():
    names = [k.name for k in attack_registry.KINDS]
    assert len(set(names)) == len(names)
    assert config.defaults().attack.kinds == attack_registry.NAMES == tuple(names)


@pytest.mark.parametrize("kind", attack_registry.KINDS, ids=lambda k: k.name)
def test_strengths_field_exists_and_is_checked(kind):
    c = config.defaults()
    assert kind.strengths in c.attack
    if kind.strengths in attack_registry.FALLBACK_STRENGTHS:  # empty by default: follows another
        other = attack_registry.FALLBACK_STRENGTHS[kind.strengths]
        assert c.attack[kind.strengths] == ()
        assert attack_registry.strengths(kind, c) == sorted(set(c.attack[other]))
        c.attack[kind.strengths] = (0.3, 0.1, 0.3)
        assert attack_registry.strengths(kind, c) == [0.1, 0.3]  # its own, once set
        c.attack[kind.strengths] = (1.5,)
        with pytest.raises(ConfigError, match=f"'attack.{kind.strengths}' must be a tuple"):
            config.validate(c)
        return
    assert len(c.attack[kind.strengths]) > 0
    assert attack_registry.strengths(kind, c) == sorted(set(c.attack[kind.strengths]))
    c.attack[kind.strengths] = ()  # an empty strength list would silently skip the attack
    with pytest.raises(ConfigError, match=f"'attack.{kind.strengths}' must be a non-empty"):
        config.validate(c)


def test_fine_prune_follows_prune_ratios_unless_given_its_own():
    c = config.defaults()
    kind = attack_registry.get("fine_prune")
    c.attack.prune_ratios = (0.0, 0.05)
    assert attack_registry.strengths(kind, c) == [0.0, 0.05]
    c.attack.fine_prune_ratios = (0.1,)
    assert attack_registry.strengths(kind, c) == [0.1]
    assert attack_registry.strengths(attack_registry.get("prune"), c) == [0.0, 0.05]


def test_unknown_kind_is_refused_by_config_and_registry():
    c = config.defaults()
    c.attack.kinds = ("ftal", "sharpen")
    want = "'attack.kinds' must be a non-empty tuple of " + "|".join(attack_registry.NAMES)
    with pytest.raises(ConfigError, match=re.escape(want)):
        config.validate(c)
    with pytest.raises(ConfigError, match="unknown attack kind 'sharpen'"):
        attack_registry.get("sharpen")


def test_every_kind_is_drawn_once_in_panel_order():
    groups = [g for g, _, _ in plots.FIGURES]
    assert {k.xscale for k in attack_registry.KINDS} <= set(attack_registry.XSCALES)
    drawn = [name for g in groups for name in attack_registry.in_group(g)]
    assert sorted(drawn) == sorted(attack_registry.NAMES)
    for g in groups:
        panels = [attack_registry.get(n).panel for n in attack_registry.in_group(g)]
        assert panels == sorted(set(panels)), g
    # The Watermark-Robustness-Toolbox order of the fine-tuning panels.
    assert attack_registry.in_group("finetune")[:4] == ("ftll", "ftal", "rtll", "rtal")


def test_fewer_bits_is_the_stronger_quantization():
    assert not attack_registry.get("quantize").larger_is_stronger
    assert stronger("quantize", 4) > stronger("quantize", 8)
    assert stronger("prune", 0.5) > stronger("prune", 0.1)
    assert stronger("not_a_kind", 2) > stronger("not_a_kind", 1)  # an older attacks.json
    recs = [{"attack": "quantize", "scheme": "s", "unit": "bits", "strength": b,
             "owned": b > 4, "success": False, "retention": b / 10, "clean_accuracy": 0.9}
            for b in (4, 8, 6)]  # fmt: skip
    [row] = summarize(recs)
    assert (row["strongest_owned"], row["weakest_lost"], row["strongest"]) == (6, 4, 4)


def test_points_yield_one_model_per_strength_in_order():
    params = {"conv": {"kernel": jnp.linspace(-1.0, 1.0, 48).reshape(2, 2, 3, 4)}}
    key = jax.random.key(0)
    quant = list(attack_registry.get("quantize").points(None, params, {}, key, [2, 8]))
    assert [q[0] for q in quant] == [2, 8]
    coarse, fine = (np.unique(np.asarray(q[1]["conv"]["kernel"])).size for q in quant)
    assert coarse < fine  # 2 bits leave fewer distinct weights than 8
    noise = list(attack_registry.get("noise").points(None, params, {}, key, [0.0, 0.5]))
    k0, k1 = (np.asarray(p[1]["conv"]["kernel"]) for p in noise)
    assert np.array_equal(k0, np.asarray(params["conv"]["kernel"]))
    assert not np.allclose(k1, k0)
