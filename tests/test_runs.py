"""Watermark modes end to end on tiny data: pipeline, embed, verify (and its refusals)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECRET = "test-owner-key"
TINY = [
    "--config=configs/demo.py",
    "--config.data.source=synthetic:train=256,test=64,classes=4",
    "--config.model.stage_sizes=(1,1)",
    "--config.model.widths=(16,32)",
    "--config.train.epochs=4",
    "--config.train.batch_size=32",
    "--config.train.steps_per_call=4",
    "--config.watermark.size=16",
    "--config.watermark.secret=",
    "--config.embed.layers_to_turn=('layer2','head')",
    "--config.embed.epochs=40",
    "--config.embed.lr=0.003",
    "--config.embed.batch_size=16",
    "--config.progress=False",
]


def launch(*args, secret=SECRET, check=True):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("JAXWM_SECRET", None)
    if secret:
        env["JAXWM_SECRET"] = secret
    proc = subprocess.run(
        [sys.executable, "launch.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"launch.py failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("pipeline")
    proc = launch(
        *TINY, "--config.pipeline.methods=('partitioned','baseline','adi')", f"--workdir={wd}"
    )
    return wd, proc


def test_pipeline_writes_table_and_owns_only_watermarked_models(pipeline_run):
    wd, proc = pipeline_run
    results = json.loads((wd / "results.json").read_text())
    assert results["victim"]["sets"][0]["owned"] is False
    for method in ("partitioned", "baseline", "adi"):
        r = results["methods"][method]
        assert r["sets"][0]["retention"] >= 0.8, method
        assert r["sets"][0]["owned"] is True, method
        assert (wd / method / "model" / "meta.json").is_file()
    table = (wd / "table1.md").read_text()
    assert "| partitioned |" in table and "| baseline |" in table and "victim" in table
    assert "| jaxwm (synthetic) |" in table  # the paper's layout, one row per dataset
    assert "| partitioned |" in proc.stdout


def test_secret_is_never_written(pipeline_run):
    wd, _ = pipeline_run
    for path in wd.rglob("*.json"):
        assert SECRET not in path.read_text(), path


def test_verify_mode_confirms_and_refuses(pipeline_run, tmp_path):
    wd, _ = pipeline_run
    manifest = wd / "watermark" / "manifest0.json"
    ok = launch(
        *TINY, "--config.mode=verify", f"--config.verify.model={wd / 'partitioned'}",
        f"--config.verify.manifest={manifest}", f"--config.verify.nulls=('{wd / 'victim'}',)",
        f"--workdir={tmp_path / 'v1'}",
    )  # fmt: skip
    verdict = json.loads((tmp_path / "v1" / "verdict.json").read_text())
    assert verdict["owned"] is True and verdict["threshold"] is not None
    assert "owned" in ok.stdout.lower() or "ownership" in ok.stdout.lower()

    innocent = launch(
        *TINY, "--config.mode=verify", f"--config.verify.model={wd / 'victim'}",
        f"--config.verify.manifest={manifest}", f"--workdir={tmp_path / 'v2'}",
    )  # fmt: skip
    assert json.loads((tmp_path / "v2" / "verdict.json").read_text())["owned"] is False
    assert innocent.returncode == 0

    wrong = launch(
        *TINY, "--config.mode=verify", f"--config.verify.model={wd / 'partitioned'}",
        f"--config.verify.manifest={manifest}", f"--workdir={tmp_path / 'v3'}",
        secret="not-the-owner", check=False,
    )  # fmt: skip
    assert wrong.returncode != 0
    assert "does not match" in wrong.stderr and "Traceback" not in wrong.stderr


def test_embed_mode_watermarks_a_trained_model(pipeline_run, tmp_path):
    wd, _ = pipeline_run
    proc = launch(
        *TINY, "--config.mode=embed", "--config.embed.method=baseline",
        f"--config.embed.victim={wd / 'victim'}", f"--workdir={tmp_path}",
    )  # fmt: skip
    out = json.loads((tmp_path / "results.json").read_text())
    assert out["after"]["sets"][0]["retention"] >= 0.8
    assert out["before"]["sets"][0]["retention"] < 0.6
    assert (tmp_path / "manifest0.json").is_file() and (tmp_path / "model").is_dir()
    assert "baseline: clean accuracy" in proc.stdout


def test_missing_secret_and_missing_victim_are_clear(tmp_path):
    proc = launch(*TINY, f"--workdir={tmp_path}", secret="", check=False)
    assert proc.returncode != 0 and "JAXWM_SECRET" in proc.stderr
    proc = launch(
        *TINY, "--config.mode=embed", f"--config.embed.victim={tmp_path / 'nope'}",
        f"--workdir={tmp_path}", check=False,
    )  # fmt: skip
    assert (
        proc.returncode != 0 and "no saved model" in proc.stderr and "Traceback" not in proc.stderr
    )
