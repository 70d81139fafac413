"""Mode reproduce: the whole (tiny) study in one command, aggregated into REPORT.md."""

import json

import pytest
from test_runs import SECRET, TINY, run_mode

from jaxwm.runner import config
from jaxwm.runner.report import render

STUDY = [
    *TINY,
    "--config.mode=reproduce",
    "--config.reproduce.presets=False",
    "--config.reproduce.runs=('synthetic=synthetic:train=256,test=64,classes=4',"
    "'cifar100=folder:/nonexistent/cifar100.tar.gz')",
    "--config.reproduce.seeds=(0,1)",
    "--config.attack.kinds=('ftal','quantize')",
    "--config.attack.ft_epochs=(0,1)",
    "--config.attack.quant_bits=(8,)",
    "--config.attack.plots=False",
]


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    wd = tmp_path_factory.mktemp("reproduce")
    return wd, run_mode(*STUDY, f"--workdir={wd}")


def test_reproduce_writes_report_with_mean_std_and_skips_missing_data(in_process):
    tmp_path, proc = in_process
    report = (tmp_path / "REPORT.md").read_text()
    assert "## Table 1" in report and "(n=2)" in report
    assert "| cifar100 | 0 | skipped:" in report and "/nonexistent/cifar100.tar.gz" in report
    assert "74.34" in report  # the paper's CIFAR-100 victim figure beside the skipped row
    assert "| ftal | partitioned |" in report
    summary = json.loads((tmp_path / "report.json").read_text())
    row = summary["studies"]["synthetic"]
    assert row["n"] == 2 and row["victim_owned"] == 0
    assert row["partitioned_owned"] == 2 and row["baseline_owned"] == 2
    assert row["partitioned_retention"]["n"] == 2
    for seed in (0, 1):
        assert (tmp_path / "synthetic" / f"seed{seed}" / "attack" / "attacks.json").is_file()
    assert "Traceback" not in proc.stderr
    # One report on stdout; each unit's Table 1 went to stderr (the console and log.txt).
    assert proc.stdout.count("Table 1 analogue") == 0 and proc.stdout.count("## Table 1") == 1
    assert proc.stderr.count("Table 1 analogue") == 2  # the synthetic dataset's two seeds
    assert (tmp_path / "log.txt").read_text().count("Table 1 analogue") == 2


def test_units_in_separate_processes_give_the_same_report(in_process, tmp_path):
    # The dispatcher runs here; its units are the separate processes under test.
    proc = run_mode(*STUDY, "--config.reproduce.processes=2", f"--workdir={tmp_path}")
    assert "4 (dataset, seed) units as separate processes, 2 at a time" in proc.stderr
    ref = json.loads((in_process[0] / "report.json").read_text())["studies"]
    got = json.loads((tmp_path / "report.json").read_text())["studies"]
    assert got == ref  # same seeds, same numbers, the missing dataset skipped the same way
    unit = tmp_path / "synthetic" / "seed1"
    assert (unit / "log.txt").is_file() and (unit / "attack" / "attacks.json").is_file()
    assert json.loads((unit / "compile_stats.json").read_text())["compilations"] > 0
    assert SECRET not in (unit / "unit_config.json").read_text()  # the secret stays in the env


def test_a_failing_unit_process_is_one_clean_error_naming_its_log(tmp_path):
    proc = run_mode(
        *STUDY,
        "--config.reproduce.processes=2",
        "--config.reproduce.runs=('synthetic=synthetic:train=256,test=64,classes=4',)",
        "--config.reproduce.seeds=(0,)",
        "--config.train.epochs=1",  # the unit fails once its victim is trained: keep that short
        "--config.embed.layers_to_turn=('no_such_layer',)",  # fails inside the unit process
        f"--workdir={tmp_path}",
        check=False,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()
    assert any(line.startswith("error: job synthetic seed 0 exited with status") for line in last)
    assert str(tmp_path / "synthetic" / "seed0" / "log.txt") in proc.stderr
    assert "no_such_layer" in proc.stderr  # the unit's own error, from its log
    assert "Traceback (most recent call last)" not in proc.stderr.split("error: job")[0]


def test_report_links_the_pooled_figures_double_width_first():
    # Hand-built: a skipped study still gets the cross-dataset figures' links (no training).
    studies = {"mnist": {"entry": "mnist=x", "seeds": [], "skipped": "no data"}}
    figures = {"": ["fig2_datasets.pdf", "fig2_datasets.png", "fig2_datasets_single.png"]}
    report = render(studies, config.defaults(), 1.0, figures)
    assert "- [fig2_datasets.png](fig2_datasets.png)" in report
    assert "_single" not in report and ".pdf)" not in report  # one link per figure
    assert "Figures 2 and 3 across datasets" not in render(studies, config.defaults(), 1.0)
