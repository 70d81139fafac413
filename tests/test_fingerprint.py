"""Run directories are bound to their config (runner/fingerprint.py): no silent reuse.

Each test is one probe that used to give a silently wrong result: a resume with another
schedule, seed or learning rate; a pipeline reusing a victim trained on other data or kept at a
mistyped path; a victim of another architecture or class count (a flax traceback before).
"""

import json
import shutil

import jax
import numpy as np
import pytest

from jaxwm.engine import checkpoint
from jaxwm.errors import CheckpointError, ConfigError, JaxwmError, ManifestError
from jaxwm.runner import config, fingerprint, modes, report, runs, verify_runs

SECRET = "5f0c1b7e9a2d4c6e8f1a3b5d7c9e0f2a4b6d8c0e1f3a5b7d9c2e4f6a8b0d1c3e"  # 256-bit test key
SOURCE = "synthetic:train=256,test=64,classes=4"


def tiny(**fields):
    """A tiny train config; ``fields`` are dotted overrides: ``tiny(**{"train.epochs": 3})``."""
    c = config.defaults()
    c.mode, c.progress, c.compile_cache = "train", False, ""  # no global JAX cache config
    c.data.source = SOURCE
    c.model.stage_sizes, c.model.widths = (1, 1), (4, 8)
    c.train.epochs, c.train.batch_size, c.train.steps_per_call = 2, 32, 4
    c.watermark.secret, c.watermark.size = SECRET, 8
    c.embed.layers_to_turn = ("layer2", "head")
    for name, value in fields.items():
        section, _, key = name.rpartition(".")
        (c[section] if section else c)[key] = value
    return c


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-epoch train run (seed 0, peak_lr 0.1); tests copy it before changing it."""
    wd = tmp_path_factory.mktemp("finished")
    modes.run(tiny(), wd)
    return wd


def _copy(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".jaxwm.lock"))
    return dst


def _params(wd):
    return jax.tree.leaves(checkpoint.load_model(wd)[0])


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert isinstance(err.value, JaxwmError) and "\n" not in msg
    return msg


def test_rerun_with_more_epochs_is_refused(finished, tmp_path):
    wd = _copy(finished, tmp_path / "run")
    before = _params(wd)
    with pytest.raises(ConfigError) as err:
        modes.run(tiny(**{"train.epochs": 60}), wd)
    msg = _one_line(err)
    assert "train.epochs 2 -> 60" in msg and "--config.restart=True" in msg and str(wd) in msg
    assert _same(before, _params(wd))  # nothing trained at learning rate 0
    # config.json still describes the run that is there.
    assert json.loads((wd / "config.json").read_text())["train"]["epochs"] == 2


def test_rerun_with_other_seed_and_lr_is_refused(finished, tmp_path):
    wd = _copy(finished, tmp_path / "run")
    with pytest.raises(ConfigError) as err:
        modes.run(tiny(seed=5, **{"train.peak_lr": 0.5}), wd)
    msg = _one_line(err)
    assert "seed 0 -> 5" in msg and "train.peak_lr 0.1 -> 0.5" in msg
    meta = checkpoint.load_model(wd)[2]
    assert meta["config"]["seed"] == 0 and meta["config"]["train"]["peak_lr"] == 0.1


def test_same_fingerprint_rerun_reuses_the_run(finished, tmp_path):
    wd = _copy(finished, tmp_path / "run")
    before = _params(wd)
    stored = json.loads((wd / fingerprint.FILE).read_text())
    assert checkpoint.load_model(wd)[2]["fingerprint"] == stored  # the model carries it too
    assert "train.eval_every" not in stored["fields"] and stored["fields"]["seed"] == 0
    # Fields that do not change the result may differ: the finished run is reused as before.
    modes.run(tiny(**{"train.eval_every": 0, "train.checkpoint_every": 2}), wd)
    assert _same(before, _params(wd))
    epochs = [json.loads(x)["epoch"] for x in (wd / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_restart_moves_the_old_run_aside_and_trains_afresh(finished, tmp_path):
    wd = _copy(finished, tmp_path / "run")
    before = _params(wd)
    modes.run(tiny(seed=5, restart=True), wd)
    (old,) = (wd / "replaced").iterdir()
    assert _same(before, _params(old))  # the earlier run is kept, moved aside whole
    assert json.loads((old / fingerprint.FILE).read_text())["fields"]["seed"] == 0
    assert checkpoint.load_model(wd)[2]["config"]["seed"] == 5
    assert json.loads((wd / fingerprint.FILE).read_text())["fields"]["seed"] == 5
    assert not _same(before, _params(wd))


def test_runs_without_fingerprint_are_judged_by_their_saved_config(finished, tmp_path):
    # A finished pre-fingerprint run: its model/meta.json config is the record.
    wd = _copy(finished, tmp_path / "legacy")
    (wd / fingerprint.FILE).unlink()
    meta_path = wd / "model" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["fingerprint"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="train.epochs 2 -> 3"):
        modes.run(tiny(**{"train.epochs": 3}), wd)
    modes.run(tiny(), wd)  # the same config: reused, and now bound
    assert (wd / fingerprint.FILE).is_file()
    # Checkpoints only (killed before the end): the old config.json is the record...
    wd = _copy(finished, tmp_path / "killed")
    shutil.rmtree(wd / "model")
    (wd / fingerprint.FILE).unlink()
    with pytest.raises(ConfigError, match="seed 0 -> 1"):
        modes.run(tiny(seed=1), wd)
    # ... and with no record at all a resume cannot be checked: refused, restart offered.
    (wd / fingerprint.FILE).unlink()
    (wd / "config.json").unlink()
    with pytest.raises(ConfigError, match="no record of its config.*restart=True"):
        modes.run(tiny(), wd)


def _pipeline(**fields):
    return tiny(mode="pipeline", **{"pipeline.methods": ("partitioned",), **fields})


def test_pipeline_refuses_a_victim_trained_on_other_data(finished, tmp_path):
    _copy(finished, tmp_path / "victim")
    other = "synthetic:train=256,test=64,classes=4,seed=9"
    with pytest.raises(ConfigError) as err:
        modes.run(_pipeline(**{"data.source": other}), tmp_path)
    msg = _one_line(err)
    assert f"data.source {SOURCE!r} -> {other!r}" in msg and "victim" in msg
    assert not (tmp_path / "partitioned").exists()


def test_pipeline_victim_must_hold_a_finished_model(tmp_path):
    typo = tmp_path / "vitcim"
    with pytest.raises(ConfigError) as err:
        modes.run(_pipeline(**{"pipeline.victim": str(typo)}), tmp_path / "run")
    assert "holds no finished model" in _one_line(err) and str(typo) in str(err.value)
    assert not typo.exists()  # no new victim trained at the mistyped path


def test_victim_of_another_architecture_or_class_count_is_one_line(finished, tmp_path):
    # pipeline: the given victim's fields differ from this config's.
    with pytest.raises(ConfigError) as err:
        modes.run(
            _pipeline(**{"pipeline.victim": str(finished), "model.widths": (8, 16)}),
            tmp_path / "p",
        )
    msg = _one_line(err)
    assert "model.widths [4, 8] -> [8, 16]" in msg and str(finished) in msg
    # embed: a 4-class victim on 3-class data.
    three = "synthetic:train=256,test=64,classes=3"
    cfg = tiny(mode="embed", **{"embed.victim": str(finished), "data.source": three})
    with pytest.raises(CheckpointError) as err:
        modes.run(cfg, tmp_path / "e")
    msg = _one_line(err)
    assert "num_classes 4 -> this run's data has 3" in msg and str(finished) in msg
    # verify: a suspect that takes other images than the watermark set's.
    with pytest.raises(CheckpointError) as err:
        runs.load_model_for(finished, channels=1)
    assert "takes 3-channel images" in _one_line(err) and str(finished) in str(err.value)
    # Every loader: arrays that do not fit the architecture meta.json records.
    bad = _copy(finished, tmp_path / "bad")
    meta = json.loads((bad / "model" / "meta.json").read_text())
    meta["config"]["model"]["widths"] = [8, 16]
    (bad / "model" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as err:
        runs.load_model_for(bad)
    msg = _one_line(err)
    assert "does not fit" in msg and "model.widths" in msg and str(bad) in msg


# --- embed and pipeline run directories, and what attack and verify read from them ---------


def _embed(victim, **fields):
    return tiny(mode="embed", **{"embed.victim": str(victim), "embed.epochs": 2, **fields})


@pytest.fixture(scope="module")
def embedded(finished, tmp_path_factory):
    """An embed run with two watermark sets (``manifest0.json``, ``manifest1.json``)."""
    wd = tmp_path_factory.mktemp("embedded")
    modes.run(_embed(finished, **{"embed.more_sets": ("layer1,head",)}), wd)
    return wd


def test_embed_rerun_with_fewer_sets_is_refused_or_restarted_without_stale_manifests(
    finished, embedded, tmp_path
):
    wd = _copy(embedded, tmp_path / "embed")
    before = _params(wd)
    with pytest.raises(ConfigError) as err:
        modes.run(_embed(finished), wd)
    msg = _one_line(err)
    assert "embed.more_sets ['layer1,head'] -> []" in msg and "--config.restart=True" in msg
    assert _same(before, _params(wd)) and (wd / "manifest1.json").is_file()  # untouched
    assert SECRET not in (wd / fingerprint.FILE).read_text()
    modes.run(_embed(finished, restart=True), wd)
    (old,) = (wd / "replaced").iterdir()
    assert sorted(p.name for p in wd.glob("manifest*.json")) == ["manifest0.json"]
    assert {"manifest0.json", "manifest1.json", "model", fingerprint.FILE} <= {
        p.name for p in old.iterdir()
    }
    assert _same(before, _params(old))
    assert len(verify_runs.load_manifests(str(wd))) == 1
    # A same-fingerprint rerun runs as before (outputs recomputed in place, nothing moved).
    modes.run(_embed(finished), wd)
    assert len(list((wd / "replaced").iterdir())) == 1
    # A manifest put back by hand is not the set the run's DIGEST.txt commits to: refused.
    shutil.copy(old / "manifest1.json", wd / "manifest1.json")
    with pytest.raises(ManifestError) as err:
        verify_runs.load_manifests(str(wd))
    assert "DIGEST.txt" in _one_line(err) and str(wd) in str(err.value)


@pytest.fixture(scope="module")
def piped(finished, tmp_path_factory):
    """A pipeline with methods partitioned and baseline on a copy of the finished victim."""
    wd = tmp_path_factory.mktemp("piped")
    _copy(finished, wd / "victim")
    modes.run(_pipeline(**{"pipeline.methods": ("partitioned", "baseline"), "embed.epochs": 2}), wd)
    return wd


def test_pipeline_rerun_with_fewer_methods_is_refused_or_restarted(piped, tmp_path):
    wd = _copy(piped, tmp_path / "run")
    fields = {"pipeline.methods": ("partitioned",), "embed.epochs": 2}
    with pytest.raises(ConfigError) as err:
        modes.run(_pipeline(**fields), wd)
    msg = _one_line(err)
    assert "pipeline.methods ['partitioned', 'baseline'] -> ['partitioned']" in msg
    assert (wd / "baseline" / "model").is_dir()
    modes.run(_pipeline(restart=True, **fields), wd)
    (old,) = (wd / "replaced").iterdir()
    assert not (wd / "baseline").exists()  # attack cannot pick up the earlier run's model
    assert {"baseline", "partitioned", "victim", "watermark"} <= {p.name for p in old.iterdir()}
    stored = json.loads((wd / fingerprint.FILE).read_text())
    assert stored["kind"] == "pipeline" and stored["fields"]["pipeline.methods"] == ["partitioned"]
    assert checkpoint.load_model(wd / "victim")[2]["fingerprint"]["fields"]["seed"] == 0


def test_attack_takes_only_models_and_manifests_of_one_pipeline_run(piped, tmp_path):
    def attack(src):
        cfg = tiny(mode="attack", **{"attack.source": str(src), "attack.kinds": ("quantize",)})
        with pytest.raises(ConfigError) as err:
            modes.run(cfg, tmp_path / "attack")
        return _one_line(err)

    # A method model made with other embedding fields (another run's, copied in).
    src = _copy(piped, tmp_path / "other_fields")
    meta_path = src / "baseline" / "model" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["fingerprint"]["fields"]["embed.epochs"] = 5
    meta_path.write_text(json.dumps(meta))
    msg = attack(src)
    assert "embed.epochs 2 -> 5" in msg and str(src / "baseline") in msg
    # A method model embedded with other watermark sets than the manifests beside it.
    src = _copy(piped, tmp_path / "other_sets")
    meta_path = src / "partitioned" / "model" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["watermark"]["digest"] = "jaxwm-wm2:" + "0" * 32
    meta_path.write_text(json.dumps(meta))
    assert "other watermark sets than the manifests" in attack(src)
    # A manifest left beside the run's own (the model recorded the digest of one set).
    src = _copy(piped, tmp_path / "stale_manifest")
    shutil.copy(src / "watermark" / "manifest0.json", src / "watermark" / "manifest1.json")
    assert "other watermark sets than the manifests" in attack(src)


def test_reproduce_units_are_bound_and_take_restart_from_presets_too(piped, tmp_path):
    study = tiny(mode="reproduce", restart=True)
    study.reproduce.presets = True  # a preset sub-config starts from defaults, not this config
    _, sub = report._entry_config(study, f"mnist={SOURCE}", 0)
    assert sub.restart is True and sub.model.widths != (4, 8)  # the preset, with restart
    # A unit's pipeline directory is bound as mode=pipeline's is (here with a tiny config).
    unit = _copy(piped, tmp_path / "seed0")
    fields = {"pipeline.methods": ("partitioned",), "embed.epochs": 2}
    with pytest.raises(ConfigError, match="pipeline.methods"):
        report._run_unit(_pipeline(**fields), unit, attacks=False)
    report._run_unit(_pipeline(restart=True, **fields), unit, attacks=False)
    assert not (unit / "baseline").exists() and (unit / "replaced").is_dir()


def test_embed_rerun_with_another_operating_point_or_bn_mode_is_refused(
    finished, embedded, tmp_path
):
    wd = _copy(embedded, tmp_path / "embed")
    more = {"embed.more_sets": ("layer1,head",)}
    with pytest.raises(ConfigError) as err:
        modes.run(_embed(finished, **more, **{"embed.operating_point": "paper_literal"}), wd)
    msg = _one_line(err)
    # The resolved fields are bound too, so the same point typed out field by field agrees.
    assert "embed.operating_point 'matched' -> 'paper_literal'" in msg
    assert "embed.clean_per_trigger 2 -> 0" in msg and "embed.target_retention 0.85 -> 0" in msg
    with pytest.raises(ConfigError) as err:
        modes.run(_embed(finished, **more, **{"embed.bn_mode": "all"}), wd)
    assert "embed.bn_mode 'inference' -> 'all'" in _one_line(err)
