"""Config validation: unknown, ill-typed and out-of-range fields are named."""

import importlib.util
from pathlib import Path

import ml_collections
import pytest

from jaxwm.errors import ConfigError, TriggerSetError
from jaxwm.runner import config, config_fields

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.py"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_is_valid_and_documented(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    doc = mod.__doc__ or ""
    for word in ("Command:", "Runtime:", "Expected:"):
        assert word in doc, f"{path.name} docstring lacks {word!r}"
    assert f"--config=configs/{path.name}" in doc
    config.validate(mod.get_config())


def test_defaults_are_valid():
    config.validate(config.defaults())


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("train.epochs", -1, "'train.epochs' must be > 0"),
        ("train.momentum", 1.5, "'train.momentum' must be in [0, 1)"),
        ("model.dtype", "int8", "'model.dtype'"),
        ("train.optimizer", "lamb", "'train.optimizer'"),
        ("study.seeds", (0, 0, 1), "distinct seeds"),  # one unit directory twice
        ("reproduce.seeds", (), "distinct seeds"),
    ],
)
def test_out_of_range(field, value, message):
    c = config.defaults()
    section, name = field.split(".")
    c[section][name] = value
    with pytest.raises(ConfigError) as e:
        config.validate(c)
    assert message in str(e.value)


def test_unknown_field_suggests_the_right_one():
    c = config.defaults()
    c.train.epoch = 3
    with pytest.raises(ConfigError, match="unknown config field 'train.epoch'.*'train.epochs'"):
        config.validate(c)


def test_wrong_type_is_named():
    c = ml_collections.ConfigDict(config.defaults().to_dict())
    c.train = ml_collections.ConfigDict(dict(c.train, batch_size="big"))
    with pytest.raises(ConfigError, match="'train.batch_size' must be of type int"):
        config.validate(c)


def test_mismatched_model_lengths():
    c = config.defaults()
    c.model.widths = (8, 16)
    with pytest.raises(ConfigError, match="equal length"):
        config.validate(c)


def test_secret_sources_conflict_demo_warning_and_strength(monkeypatch, capsys):
    from jaxwm import triggers

    cfg = config.defaults()
    monkeypatch.setenv(config.SECRET_ENV, "a" * 64)
    cfg.watermark.secret = "b" * 64
    with pytest.raises(ConfigError, match="both set and differ"):
        config.secret(cfg)
    cfg.watermark.secret = "a" * 64  # the same key twice is fine
    assert config.secret(cfg) == "a" * 64
    monkeypatch.delenv(config.SECRET_ENV)
    cfg.watermark.secret = triggers.DEMO_SECRET
    monkeypatch.setattr(config, "_warned_demo_key", False)  # once per process
    assert config.secret(cfg, embedding=True) == triggers.DEMO_SECRET
    assert "published watermark key" in capsys.readouterr().err
    config.secret(cfg)
    assert "published watermark key" not in capsys.readouterr().err
    cfg.watermark.secret = "owner-1"
    assert config.secret(cfg) == "owner-1"  # verifying an old, short key still works
    with pytest.raises(TriggerSetError, match="too weak"):
        config.secret(cfg, embedding=True)


def test_every_field_is_declared_once_with_a_meaning_and_a_valid_default():
    names = [f.name for f in config_fields.FIELDS]
    assert len(set(names)) == len(names)
    flat = [
        f"{k}.{sub}" if isinstance(v, dict) else k
        for k, v in config.defaults().to_dict().items()
        for sub in (v if isinstance(v, dict) else [None])
    ]
    assert sorted(flat) == sorted(names)  # defaults() holds exactly the declared fields
    for f in config_fields.FIELDS:
        assert f.doc, f"{f.name} has no meaning"
        assert f.check is None or f.check.test(f.default), f"{f.name}: default fails its check"


def test_every_check_names_what_a_valid_value_is():
    # One bad value per checked field: the message names the field and the declared rule.
    bad = {"mode": "fly", "model.dtype": "int8", "train.epochs": 0, "verify.alpha": 1.0,
           "attack.quant_bits": (1,), "reproduce.runs": ("mnist",)}  # fmt: skip
    by_name = {f.name: f for f in config_fields.FIELDS}
    for name, value in bad.items():
        c = config.defaults()
        section, key = name.split(".") if "." in name else (None, name)
        (c[section] if section else c)[key] = value
        with pytest.raises(ConfigError) as e:
            config.validate(c)
        assert str(e.value) == (
            f"config field {name!r} must be {by_name[name].check.want}, got {value!r}"
        )


def _embed_cfg(**fields):
    c = config.defaults()
    for k, v in fields.items():
        c.embed[k] = v
    return c


@pytest.mark.parametrize(
    "fields,expected",
    [
        ({}, (2.0, 0.85)),  # the default, matched
        ({"operating_point": "paper_literal"}, (0.0, 0.0)),
        ({"operating_point": "mixed"}, (2.0, 0.0)),
        ({"operating_point": "mixed", "clean_per_trigger": 4.0}, (4.0, 0.0)),
        ({"operating_point": "matched", "target_retention": 0.9}, (2.0, 0.9)),
        ({"operating_point": "paper_literal", "clean_per_trigger": 0}, (0, 0.0)),
        ({"operating_point": "custom"}, (0.0, 0.0)),
        ({"operating_point": "custom", "clean_per_trigger": 3.0}, (3.0, 0.0)),
        ({"operating_point": "custom", "target_retention": 0.5}, (0.0, 0.5)),
    ],
)
def test_operating_point_fills_the_fields_it_names(fields, expected):
    c = config.validate(_embed_cfg(**fields))
    assert (c.embed.clean_per_trigger, c.embed.target_retention) == expected
    assert config.validate(c).embed.to_dict() == c.embed.to_dict()  # idempotent


@pytest.mark.parametrize(
    "fields,field",
    [
        ({"operating_point": "paper_literal", "clean_per_trigger": 2.0}, "clean_per_trigger"),
        ({"operating_point": "paper_literal", "target_retention": 0.85}, "target_retention"),
        ({"operating_point": "mixed", "clean_per_trigger": 0.0}, "clean_per_trigger"),
        ({"operating_point": "mixed", "target_retention": 0.85}, "target_retention"),
        ({"operating_point": "matched", "target_retention": 0.0}, "target_retention"),
        ({"clean_per_trigger": 0.0}, "clean_per_trigger"),  # against the default, matched
    ],
)
def test_a_typed_field_that_contradicts_the_operating_point_is_refused(fields, field):
    with pytest.raises(ConfigError) as e:
        config.validate(_embed_cfg(**fields))
    msg = str(e.value)
    assert f"'embed.{field}'" in msg and "'embed.operating_point'" in msg and "custom" in msg


def test_removed_freeze_bn_stats_names_its_replacement():
    c = config.defaults()
    c.embed.freeze_bn_stats = False
    with pytest.raises(ConfigError, match="replaced by embed.bn_mode"):
        config.validate(c)
