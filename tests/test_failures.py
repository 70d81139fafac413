"""Failures a user can cause end as one JaxwmError naming the field or path, before any work
where possible, and leave what was written usable (jaxwm.runner.modes, preflight, checkpoint)."""

import errno
import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxwm import manifest
from jaxwm.engine import checkpoint
from jaxwm.errors import ConfigError, DiskFullError, PatternError, TriggerSetError
from jaxwm.runner import config, experiments, modes, preflight


def _cfg(**fields):
    c = config.defaults()
    c.data.source = "synthetic:train=64,test=16,classes=4"
    c.model.stage_sizes = (1, 1)
    c.model.widths = (4, 8)
    c.train.epochs = 1
    c.train.batch_size = 16
    c.progress = False
    c.compile_cache = ""
    c.watermark.size = 8
    c.watermark.secret = "jaxwm-demo-secret-do-not-use"
    c.embed.layers_to_turn = ("layer2", "head")
    for dotted, value in fields.items():
        section, _, name = dotted.rpartition("__")
        (c[section] if section else c)[name] = value
    return c


def test_workdir_that_is_a_file_or_unwritable_is_one_config_error(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    with pytest.raises(ConfigError, match=r"--workdir .*afile.* is an existing file"):
        modes.run(_cfg(), afile)
    with pytest.raises(ConfigError, match=r"--workdir .*afile/run.* cannot be created"):
        modes.run(_cfg(), afile / "run")
    assert afile.read_text() == "keep me"


@pytest.mark.parametrize(
    "fields,error,message",
    [
        ({"train__batch_size": 128}, ConfigError, r"'train.batch_size'.*larger than the 64"),
        ({"mode": "pipeline", "embed__layers_to_turn": ("layer9", "head")}, PatternError,
         r"'embed.layers_to_turn'.*\['layer9'\] match no parameter"),
        ({"mode": "pipeline", "embed__more_sets": ("head,laier1",)}, PatternError,
         r"'embed.more_sets\[0\]'.*laier1"),
        ({"mode": "pipeline", "watermark__size": manifest.MAX_TRIGGERS + 1}, ConfigError,
         r"'watermark.size' must be <= 100,000"),
        ({"mode": "pipeline", "watermark__kind": "content", "watermark__size": 65},
         TriggerSetError, r"size=65 exceeds the 64 eligible.*watermark.kind='content'"),
    ],
)  # fmt: skip
def test_config_errors_fail_before_anything_trains(tmp_path, fields, error, message):
    with pytest.raises(error, match=message):
        modes.run(_cfg(**fields), tmp_path)
    assert not (tmp_path / "victim").exists() and not (tmp_path / "checkpoints").exists()


def test_preflight_checks_layers_against_a_saved_victim(tmp_path):
    # mode=embed: the patterns are checked on the victim's saved architecture, not cfg.model.
    (tmp_path / "model").mkdir()
    saved = _cfg(model__stage_sizes=(1, 1, 1), model__widths=(4, 8, 8))
    meta = {"config": config.public_dict(saved)}
    (tmp_path / "model" / "meta.json").write_text(json.dumps(meta))
    cfg = _cfg(mode="embed", embed__victim=str(tmp_path), embed__layers_to_turn=("layer3",))
    preflight.check(cfg)  # layer3 exists in the victim, though not in cfg.model
    cfg.embed.layers_to_turn = ("layer4",)
    with pytest.raises(PatternError, match="layer4"):
        preflight.check(cfg)


def _leaves(path):
    params, state, _ = checkpoint.load_model(path)
    return jax.tree.leaves((params, state))


def test_disk_full_keeps_the_last_checkpoint_and_the_same_command_resumes(
    tmp_path, monkeypatch, capsys
):
    # The reference run also shows an unusable compile cache: one warning, and the run goes on.
    cache = tmp_path / "cache-is-a-file"
    cache.write_text("")
    modes.run(_cfg(train__epochs=4, compile_cache=str(cache)), tmp_path / "ref")
    err = capsys.readouterr().err
    assert err.count("warning: compile_cache") == 1 and "not a writable directory" in err
    cfg = _cfg(train__epochs=4)
    real_save = ocp.CheckpointManager.save

    def full_at_step_3(self, step, *args, **kwargs):
        if step == 3:  # as orbax/TensorStore report it: a ValueError quoting the OS error
            raise ValueError("Failed to write: No space left on device [os_error_code='28']")
        return real_save(self, step, *args, **kwargs)

    run = tmp_path / "run"
    monkeypatch.setattr(ocp.CheckpointManager, "save", full_at_step_3)
    with pytest.raises(DiskFullError, match=r"checkpoints; the last complete .*checkpoints/2"):
        modes.run(cfg, run)
    assert checkpoint.complete_steps(run / "checkpoints") == [1, 2]
    assert not (run / "model").exists()
    monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)

    # Full again while writing results: the file is named, and the model saved before it is kept.
    real_write = experiments.write_json

    def full_results(path, obj):
        if path.name == "results.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, obj)

    monkeypatch.setattr(experiments, "write_json", full_results)
    with pytest.raises(DiskFullError, match=r"while writing .*results\.json"):
        modes.run(cfg, run)
    monkeypatch.setattr(experiments, "write_json", real_write)
    modes.run(cfg, run)  # resumes from checkpoint 2: bit-identical to the uninterrupted run
    for a, b in zip(_leaves(tmp_path / "ref"), _leaves(run), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_checkpoint_the_disk_cannot_hold_is_refused_before_writing(tmp_path, monkeypatch):
    ckpt = checkpoint.Checkpointer(tmp_path / "ckpt")
    state = {"w": np.ones(1000, np.float32)}
    ckpt.save(1, state, {"epoch": 1})
    ckpt.wait()
    free = checkpoint.SPACE_MARGIN  # less than a checkpoint plus the margin
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda p: type("U", (), {"free": free}))
    with pytest.raises(DiskFullError, match=r"ckpt/1, is intact"):
        ckpt.save(2, state, {"epoch": 2})
    assert checkpoint.complete_steps(tmp_path / "ckpt") == [1]
    assert not [p for p in (tmp_path / "ckpt").iterdir() if checkpoint.TMP_MARK in p.name]
    restored, meta = checkpoint.Checkpointer(tmp_path / "ckpt").restore(state)
    assert meta["epoch"] == 1 and np.array_equal(restored["w"], state["w"])


def test_save_model_on_a_full_disk_keeps_the_previous_model(tmp_path, monkeypatch):
    params, state = {"w": np.ones(3, np.float32)}, {}
    checkpoint.save_model(tmp_path, params, state, {"v": 1})

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ocp.StandardCheckpointer, "save", full)
    with pytest.raises(DiskFullError, match=r"saving the model to .*model; the model already"):
        checkpoint.save_model(tmp_path, {"w": np.zeros(3, np.float32)}, state, {"v": 2})
    assert not (tmp_path / "model.tmp").exists()
    p, _, meta = checkpoint.load_model(tmp_path)
    assert meta == {"v": 1} and np.array_equal(p["w"], params["w"])
