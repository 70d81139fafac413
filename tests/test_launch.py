"""launch.py end to end: a tiny run, kill -> resume equality, and clear errors for bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_runs import run_mode

from jaxwm.engine import checkpoint
from jaxwm.runner import cli

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--config=configs/demo.py",
    "--config.mode=train",
    "--config.data.source=synthetic:train=256,test=64,classes=4",
    "--config.model.stage_sizes=(1,1)",
    "--config.model.widths=(4,8)",
    "--config.train.batch_size=32",
    "--config.train.steps_per_call=4",
    "--config.progress=False",
]


def launch(*args, check=True, **kw):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "launch.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        **kw,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"launch.py failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_tiny_run_end_to_end(tmp_path):
    proc = launch(*TINY, "--config.train.epochs=3", f"--workdir={tmp_path}")
    assert "test accuracy" in proc.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["test_accuracy"] > 0.5  # 4 learnable classes, chance is 0.25
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert all(r["img_per_s"] > 0 for r in rows)
    params, state, meta = checkpoint.load_model(tmp_path)
    assert meta["config"]["train"]["epochs"] == 3
    assert meta["dataset"]["name"] == "synthetic"
    assert params["head"]["kernel"].shape == (8, 4)


def test_killed_or_interrupted_run_resumes_to_the_same_result(tmp_path):
    args = [*TINY, "--config.train.epochs=12"]
    ref = tmp_path / "ref"
    launch(*args, f"--workdir={ref}")
    p_ref, s_ref, _ = checkpoint.load_model(ref)
    r_ref = json.loads((ref / "results.json").read_text())["test_accuracy"]

    env = dict(os.environ, JAX_PLATFORMS="cpu")
    for sig in (signal.SIGKILL, signal.SIGINT):  # kill -9, and Ctrl-C
        killed = tmp_path / sig.name
        proc = subprocess.Popen(
            [sys.executable, "launch.py", *args, f"--workdir={killed}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.time() + 120
        metrics = killed / "metrics.jsonl"
        while time.time() < deadline:  # kill once a few epochs are done, well before the end
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
                break
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate()
        done = len(metrics.read_text().splitlines())
        assert 3 <= done < 12, f"kill did not land mid-run ({done} epochs done)"
        assert not (killed / "model").exists()
        if sig == signal.SIGINT:  # one line: where the run resumes, and the command; exit 130
            assert proc.returncode == 130 and "Traceback" not in err, err
            [line] = [x for x in err.splitlines() if x.startswith("error:")]
            last = checkpoint.complete_steps(killed / "checkpoints")[-1]
            assert f"checkpoint {killed / 'checkpoints' / str(last)} (epoch {last}/12)" in line
            assert f"run the same command: python launch.py {args[0]}" in line
            assert f"--workdir={killed}" in line and len(err.splitlines()) <= 2, err
            assert line in (killed / "log.txt").read_text()  # log.txt keeps the error too

        verbose = ["--verbosity=0"] if sig == signal.SIGKILL else []  # INFO on the console
        resumed = launch(*args, f"--workdir={killed}", *verbose)
        assert "resuming train from epoch" in resumed.stderr
        assert ("resumed from" in resumed.stderr) == bool(verbose)  # loop.py's INFO record
        epochs = [json.loads(x)["epoch"] for x in metrics.read_text().splitlines()]
        assert epochs == list(range(1, 13))  # one row per epoch, none repeated by the resume
        p_res, s_res, _ = checkpoint.load_model(killed)
        for a, b in zip(
            _leaves((p_ref, s_ref)), _leaves((p_res, s_res)), strict=True
        ):  # same seed, same device: bit-identical
            np.testing.assert_array_equal(a, b)
        assert json.loads((killed / "results.json").read_text())["test_accuracy"] == r_ref


def test_ctrl_c_swallowed_by_a_destructor_is_raised_again():
    # Python only prints an exception raised in __del__ or a gc callback; a Ctrl-C landing
    # there used to be lost (the run went on to the end and exited 0).
    class Swallows:
        def __del__(self):
            raise KeyboardInterrupt

    saved = sys.unraisablehook
    try:
        cli.redeliver_swallowed_interrupts()
        with pytest.raises(KeyboardInterrupt):
            Swallows()  # collected at once: the interrupt is re-delivered to this thread
            deadline = time.time() + 30  # the main thread raises it at its next check
            while time.time() < deadline:
                pass
    finally:
        sys.unraisablehook = saved


def _leaves(tree):
    import jax

    return jax.tree.leaves(tree)


@pytest.mark.parametrize(
    "override,message,cli",
    [
        ("--config.train.epochs=0", "'train.epochs' must be > 0", True),
        ("--config.train.schedule=step", "'train.schedule' must be cosine|linear|constant", False),
        ("--config.data.source=folder:/nonexistent/x.tar", "/nonexistent/x.tar", False),
        ("--config.data.source=imagenet", "imagenet", False),
        ("--config.mode=dance", "'mode' must be one of", False),
    ],
)
def test_bad_config_values_fail_with_field_name(tmp_path, override, message, cli):
    # One case through the real command line (exit status, one line); the others in process,
    # where run_mode turns the same JaxwmError into launch.py's status and line.
    run = launch if cli else run_mode
    proc = run(*TINY, override, f"--workdir={tmp_path}", check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")


def test_unknown_and_ill_typed_fields_are_named(tmp_path):
    proc = launch(*TINY, "--config.train.epoch=3", f"--workdir={tmp_path}", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "unknown config field on the command line: 'epoch'" in proc.stderr
    assert 'Did you mean "epochs"' in proc.stderr
    proc = launch(*TINY, "--config.train.epochs=abc", f"--workdir={tmp_path}", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--config.train.epochs=abc" in proc.stderr


def test_sweep_mode_aggregates_seeds_and_lrs(tmp_path):
    proc = run_mode(
        *TINY, "--config.mode=sweep", "--config.sweep.seeds=(0,1)",
        "--config.sweep.lrs=(0.05,0.1)", "--config.train.epochs=2", f"--workdir={tmp_path}",
    )  # fmt: skip
    out = json.loads((tmp_path / "results.json").read_text())
    assert [(r["peak_lr"], r["seed"]) for r in out["runs"]] == [
        (0.05, 0),
        (0.05, 1),
        (0.1, 0),
        (0.1, 1),
    ]
    assert [row["test_accuracy"]["n"] for row in out["summary"]] == [2, 2]
    assert "± " in proc.stdout and "(n=2)" in proc.stdout


def test_a_second_run_on_a_busy_workdir_fails_at_once_naming_the_holder(tmp_path):
    from jaxwm.runner import lock

    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from jaxwm.runner.lock import workdir_lock\n"
         f"with workdir_lock({str(tmp_path)!r}):\n print('held', flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.perf_counter()
        proc = run_mode(*TINY, "--config.train.epochs=1", f"--workdir={tmp_path}", check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert "in use by another jaxwm run" in proc.stderr and f"pid {holder.pid}" in proc.stderr
        assert time.perf_counter() - t0 < 60  # at once, not after the holder
        assert not (tmp_path / "config.json").exists()  # nothing of the holder's was touched
    finally:
        holder.kill()
        holder.wait()
    # Killed holders release the lock: the run directory is usable again.
    with lock.workdir_lock(tmp_path):
        pass
