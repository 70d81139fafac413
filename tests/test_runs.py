"""Watermark modes end to end on tiny data: pipeline, embed, verify (and its refusals)."""

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from jaxwm.engine import checkpoint
from jaxwm.errors import JaxwmError
from jaxwm.runner import cli, modes, runs

ROOT = Path(__file__).resolve().parents[1]
SECRET = "5f0c1b7e9a2d4c6e8f1a3b5d7c9e0f2a4b6d8c0e1f3a5b7d9c2e4f6a8b0d1c3e"  # 256-bit test key
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


def run_mode(*args, secret=SECRET, check=True):
    """What :func:`launch` does, in this process (no interpreter start, JAX's caches shared).

    The same flags are parsed the way launch.py parses them and a JaxwmError becomes launch.py's
    exit status 1 and ``error: ...`` line; any other exception propagates (a traceback in the
    CLI). The environment is restored afterwards.
    """
    argv = ["launch.py"]
    argv += [a.replace("--config=configs/", f"--config={ROOT}/configs/", 1) for a in args]
    argv = cli.last_overrides(argv)  # as launch.py: a repeated override, the last one wins
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", str(ROOT / "configs/demo.py"), "", flag_values=fv, sys_argv=argv
    )
    flags.DEFINE_string("workdir", None, "", flag_values=fv)
    fv(argv)
    cfg = fv["config"].value
    saved = dict(os.environ)
    os.environ.pop("JAXWM_SECRET", None)
    if secret:
        os.environ["JAXWM_SECRET"] = secret
    out, err, code = io.StringIO(), io.StringIO(), 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            modes.run(cfg, fv["workdir"].value)
    except JaxwmError as e:
        code = 1
        err.write(f"error: {e}\n")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    proc = subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"run failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("pipeline")
    proc = run_mode(  # with progress: stderr is no terminal here, so plain lines (log.txt)
        *TINY,
        "--config.pipeline.methods=('partitioned','baseline','adi')",
        f"--workdir={wd}",
        "--config.progress=True",
        # TensorBoard events for each embedding when the extra is there (CI's dev extra has it).
        f"--config.tensorboard={importlib.util.find_spec('tensorboardX') is not None}",
    )
    return wd, proc


def test_pipeline_writes_embedding_events_for_tensorboard(pipeline_run):
    pytest.importorskip("tensorboardX")
    wd, _ = pipeline_run
    for method in ("partitioned", "baseline"):
        (events,) = (wd / method / "tensorboard").glob("events.out.tfevents.*")
        data = events.read_bytes()
        for tag in ("retention", "loss", "learning_rate", "trainable_stages"):
            assert f"embed/set0/{tag}".encode() in data, (method, tag)


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
    assert table.count("| model |") == 1  # one Table 1, printed once
    assert "on the full test split (64 images)" in table  # the split clean accuracy is on
    assert proc.stdout.count("| partitioned |") == 1
    log = (wd / "log.txt").read_text()
    assert "train epoch 4/4" in log and "\r" not in log  # plain progress lines, not bar frames
    assert "| partitioned |" in log  # and what was printed
    rows = [json.loads(x) for x in (wd / "victim" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["lr"] >= 0 for r in rows) and rows[0]["lr"] > rows[-1]["lr"]  # cosine decay


def test_secret_is_never_written(pipeline_run):
    wd, _ = pipeline_run
    for path in [*wd.rglob("*.json"), *wd.rglob("log.txt")]:
        assert SECRET not in path.read_text(), path
    assert (wd / "log.txt").is_file()


def _verify(wd, tmp, name, *extra, digest=True, **kw):  # in process: see run_mode
    manifest = wd / "watermark"
    args = [*TINY, "--config.mode=verify", f"--config.verify.manifest={manifest}",
            f"--workdir={tmp / name}", *extra]  # fmt: skip
    if digest:
        args.append(f"--config.verify.digest={(manifest / 'DIGEST.txt').read_text().strip()}")
    proc = run_mode(*args, **kw)
    path = tmp / name / "verdict.json"
    return proc, (json.loads(path.read_text()) if path.is_file() else None)


def test_verify_mode_confirms_and_refuses(pipeline_run, tmp_path):
    wd, _ = pipeline_run
    ok, verdict = _verify(wd, tmp_path, "v1", f"--config.verify.model={wd / 'partitioned'}",
                          f"--config.verify.nulls=('{wd / 'victim'}',)")  # fmt: skip
    assert verdict["owned"] is True and verdict["digest_matches"] is True
    s = verdict["sets"][0]
    assert s["threshold"] is not None and s["null_fpr_bound"] > 0.05  # one null: a weak bound
    assert {t["name"] for t in s["tests"]} == {"control", "permutation", "binomial", "null_models"}
    assert s["retention_ci"][0] <= s["retention"] <= s["retention_ci"][1]
    assert ok.stdout.startswith("owned") and "published" in ok.stdout

    innocent, v2 = _verify(wd, tmp_path, "v2", f"--config.verify.model={wd / 'victim'}")
    assert v2["owned"] is False and innocent.returncode == 0

    wrong, _ = _verify(wd, tmp_path, "v3", f"--config.verify.model={wd / 'partitioned'}",
                       secret="0" * 8 + SECRET[8:], check=False)  # fmt: skip
    assert wrong.returncode != 0
    assert "does not match" in wrong.stderr and "Traceback" not in wrong.stderr


def test_verify_without_published_digest_uses_the_strict_level(pipeline_run, tmp_path):
    wd, _ = pipeline_run
    proc, v = _verify(wd, tmp_path, "v", f"--config.verify.model={wd / 'partitioned'}",
                      digest=False)  # fmt: skip
    # 16 triggers cannot reach 1e-12: without a prior publication the claim is not decided.
    assert v["digest_matches"] is False and v["alpha"] == 1e-12 and v["owned"] is False
    assert "could have tried many keys" in proc.stdout
    bad, _ = _verify(wd, tmp_path, "w", f"--config.verify.model={wd / 'partitioned'}",
                     "--config.verify.digest=jaxwm-wm2:" + "0" * 32, digest=False,
                     check=False)  # fmt: skip
    assert bad.returncode != 0 and "published digest" in bad.stderr
    assert "Traceback" not in bad.stderr
    # The claimant cannot loosen the level of the verdict.
    loose, _ = _verify(wd, tmp_path, "x", f"--config.verify.model={wd / 'victim'}",
                       "--config.verify.alpha_unpublished=0.99", digest=False,
                       check=False)  # fmt: skip
    assert loose.returncode != 0 and "not the claimant's to raise" in loose.stderr


def test_digest_mode_prints_the_published_digest(pipeline_run, tmp_path):
    wd, _ = pipeline_run
    proc = run_mode(*TINY, "--config.mode=digest", f"--config.verify.manifest={wd / 'watermark'}",
                  f"--workdir={tmp_path}")  # fmt: skip
    assert proc.stdout.strip() == (wd / "watermark" / "DIGEST.txt").read_text().strip()


def test_black_box_verification_from_answers_and_endpoint(pipeline_run, tmp_path):
    import numpy as np

    from jaxwm import blackbox
    from jaxwm.engine import train
    from jaxwm.runner import runs

    wd, _ = pipeline_run
    exp = run_mode(*TINY, "--config.mode=export", f"--config.verify.manifest={wd / 'watermark'}",
                 f"--workdir={tmp_path / 'export'}")  # fmt: skip
    queries = tmp_path / "export" / "queries"
    images = blackbox.load_queries(queries)
    assert len(images) == 16 * 5 and "80 query images" in exp.stdout
    model, params, state, meta = runs.load_model_for(wd / "partitioned")
    norm = meta["normalization"]
    predict = train.make_predict(model.apply, norm["mean"], norm["std"])
    logits = np.asarray(predict(params, state, images))
    answers = queries / "answers.npy"
    np.save(answers, logits)
    _, v = _verify(wd, tmp_path, "bb", f"--config.verify.answers={answers}")
    assert v["owned"] is True and v["suspect"].startswith("answers file")

    server, url = blackbox.serve_predictions(lambda x: predict(params, state, x))
    try:
        _, v = _verify(wd, tmp_path, "http", f"--config.verify.endpoint={url}")
    finally:
        server.shutdown()
    assert v["owned"] is True and v["suspect"].startswith("endpoint")
    # A suspect with another class count is refused: its logits are 4 wide, the set says 7.
    np.save(answers, np.zeros((len(images), 7), np.float32))
    bad, _ = _verify(wd, tmp_path, "k", f"--config.verify.answers={answers}", check=False)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr


def test_secret_precedence_and_demo_key(pipeline_run, tmp_path):
    wd, _ = pipeline_run
    both = run_mode(*TINY, "--config.mode=verify", f"--config.verify.model={wd / 'victim'}",
                  f"--config.verify.manifest={wd / 'watermark'}", "--config.watermark.secret=xyz",
                  f"--workdir={tmp_path}", check=False)  # fmt: skip
    assert both.returncode != 0 and "both set and differ" in both.stderr
    weak = run_mode(*TINY, f"--workdir={tmp_path / 'weak'}", secret="short key", check=False)
    assert weak.returncode != 0 and "too weak" in weak.stderr and "generate_secret" in weak.stderr


def test_embed_mode_watermarks_a_trained_model(pipeline_run, tmp_path):
    wd, _ = pipeline_run
    proc = run_mode(
        *TINY, "--config.mode=embed", "--config.embed.method=baseline",
        f"--config.embed.victim={wd / 'victim'}", f"--workdir={tmp_path}",
    )  # fmt: skip
    out = json.loads((tmp_path / "results.json").read_text())
    assert out["after"]["sets"][0]["retention"] >= 0.8
    assert out["before"]["sets"][0]["retention"] < 0.6
    assert (tmp_path / "manifest0.json").is_file() and (tmp_path / "model").is_dir()
    assert "baseline: clean accuracy" in proc.stdout


def test_missing_secret_and_missing_victim_are_clear(tmp_path):
    # The real command line once: a user error is a non-zero exit and one line, no traceback.
    proc = launch(*TINY, f"--workdir={tmp_path}", secret="", check=False)
    assert proc.returncode != 0 and "JAXWM_SECRET" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in proc.stderr
    proc = run_mode(
        *TINY, "--config.mode=embed", f"--config.embed.victim={tmp_path / 'nope'}",
        f"--workdir={tmp_path}", check=False,
    )  # fmt: skip
    assert (
        proc.returncode != 0 and "no saved model" in proc.stderr and "Traceback" not in proc.stderr
    )


def test_null_models_of_another_architecture_use_their_own_predict(pipeline_run, tmp_path):
    wd, _ = pipeline_run
    other = tmp_path / "other_null"
    args = [a for a in TINY if not a.startswith("--config.model.widths")]  # no repeated flag
    run_mode(*args, "--config.mode=train", "--config.model.widths=(8,24)", "--config.seed=7",
           "--config.train.epochs=2", f"--workdir={other}")  # fmt: skip
    _, v = _verify(wd, tmp_path, "v", f"--config.verify.model={wd / 'baseline'}",
                   f"--config.verify.nulls=('{other}','{wd / 'victim'}')")  # fmt: skip
    s = v["sets"][0]
    assert v["owned"] is True and s["threshold"] is not None
    null_test = next(t for t in s["tests"] if t["name"] == "null_models")
    assert "2 independent models" in null_test["detail"]


def test_victim_accuracy_is_measured_once_per_checkpoint_and_test_split(
    pipeline_run, tmp_path, monkeypatch
):
    wd, _ = pipeline_run
    first = json.loads((wd / "results.json").read_text())["victim"]["test_accuracy"]
    given = []
    real = runs.evaluate_model

    def spy(*args, **kwargs):
        given.append(kwargs.get("accuracy"))
        return real(*args, **kwargs)

    monkeypatch.setattr(runs, "evaluate_model", spy)
    # The same victim again in this process (as a study's units do): its accuracy is reused.
    run_mode(*TINY, "--config.pipeline.methods=('baseline',)", "--config.embed.epochs=2",
             f"--config.pipeline.victim={wd / 'victim'}", f"--workdir={tmp_path / 'again'}")  # fmt: skip
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert given[0] == first and given[-1] is None  # the victim reused; the baseline measured
    assert again["victim"]["test_accuracy"] == first

    # What the key depends on: the weights evaluated, the model and the test split's content.
    p, st, _ = checkpoint.load_model(wd / "victim")
    model = SimpleNamespace(name="a model")
    ds = SimpleNamespace(test_images=np.arange(32, dtype=np.uint8).reshape(2, 4, 4, 1),
                         test_labels=np.array([0, 1], np.int32), mean=(0.5,), std=(0.2,))  # fmt: skip
    key = runs.victim_accuracy_key(p, st, model, ds)
    copy = SimpleNamespace(**{**vars(ds), "test_images": ds.test_images.copy()})
    assert runs.victim_accuracy_key(p, st, model, copy) == key
    relabelled = SimpleNamespace(**{**vars(ds), "test_labels": np.array([1, 1], np.int32)})
    assert runs.victim_accuracy_key(p, st, model, relabelled) != key
    other, other_st, _ = checkpoint.load_model(wd / "baseline")  # another checkpoint
    assert runs.victim_accuracy_key(other, other_st, model, ds) != key
    assert runs.victim_accuracy_key(p, st, SimpleNamespace(name="other"), ds) != key
    nudged = jax.tree.map(lambda x: x, p)
    first_leaf = jax.tree_util.tree_leaves(nudged)[0]
    first_leaf = np.asarray(first_leaf).copy()
    first_leaf.flat[0] += 1e-6  # one weight retrained
    nudged = jax.tree.unflatten(jax.tree.structure(p), [first_leaf, *jax.tree.leaves(p)[1:]])
    assert runs.victim_accuracy_key(nudged, st, model, ds) != key
    renormalised = SimpleNamespace(**{**vars(ds), "mean": (0.4,)})
    assert runs.victim_accuracy_key(p, st, model, renormalised) != key
