"""Mode ``attack`` end to end on a tiny pipeline run, and its success criterion and data split."""

import csv
import json

import numpy as np
import pytest
from test_runs import SECRET, TINY, run_mode

from jaxwm import verify
from jaxwm.errors import ConfigError
from jaxwm.runner import attack_registry, attack_runs, plots

ATTACK = [
    "--config.mode=attack",
    "--config.attack.kinds=('ftal','prune','quantize')",
    "--config.attack.ft_epochs=(0,1)",
    "--config.attack.prune_ratios=(0.0,0.5)",
    "--config.attack.quant_bits=(8,)",
    "--config.attack.batch_size=16",
]
PNGS = ("fig2_finetune.png", "fig3_pruning.png", "attacks_other.png", "attacks_scatter.png")


@pytest.fixture(scope="module")
def attack_run(tmp_path_factory):
    src = tmp_path_factory.mktemp("pipeline")
    run_mode(*TINY, f"--workdir={src}")
    wd = tmp_path_factory.mktemp("attack")
    proc = run_mode(*TINY, *ATTACK, f"--config.attack.source={src}", f"--workdir={wd}")
    return wd, json.loads((wd / "attacks.json").read_text()), proc


def test_writes_results_table_and_plots(attack_run):
    wd, out, proc = attack_run
    for name in ("attacks.json", "attacks.csv", "attacks.md", *PNGS):
        assert (wd / name).is_file() and (wd / name).stat().st_size > 0, name
    assert "| ftal | partitioned |" in proc.stdout and "WRT success" in proc.stdout
    assert "[baseline 3/3] quantize" in proc.stderr
    rows = list(csv.DictReader((wd / "attacks.csv").open()))
    assert len(rows) == len(out["records"]) == 2 * (2 + 2 + 1)
    assert {(r["attack"], r["scheme"]) for r in out["summary"]} == {
        (a, s) for a in ("ftal", "prune", "quantize") for s in ("partitioned", "baseline")
    }
    assert SECRET not in (wd / "attacks.json").read_text()
    assert SECRET not in (wd / "log.txt").read_text()
    md = (wd / "attacks.md").read_text()
    cells = [c.strip() for line in md.splitlines() if line.startswith("| ftal")
             for c in line.strip("|").split("|")]  # fmt: skip
    assert cells and not any("/" in c or "(" in c for c in cells)  # one number per cell
    assert "evaluation share of the test split" in md  # the split its accuracies are on


def test_records_are_complete_and_consistent(attack_run):
    _, out, _ = attack_run
    fields = set(attack_runs.CSV_FIELDS) - {"attacker_retention"}
    for r in out["records"]:
        assert fields <= set(r), set(r) ^ fields
        assert r["unit"] == attack_registry.get(r["attack"]).unit
        assert r["retention"] == r["k"] / r["n"] and r["n"] == 16
        # The decision threshold is necessary for ownership (the control test may ask more);
        # success = not owned and usable.
        if r["owned"]:
            assert r["retention"] >= out["decision_threshold"]
        assert r["decided_by"] in ("control", "permutation", "null_models", "binomial")
        ok_acc = r["accuracy_drop"] <= out["max_acc_drop"] + 1e-9
        ref_owned = out["reference"][r["scheme"]]["owned"]
        assert r["success"] == (ref_owned and not r["owned"] and ok_acc)
    assert out["null_retentions"][0] == out["victim"]["retention"]


def test_strength_zero_reproduces_the_unattacked_model(attack_run):
    _, out, _ = attack_run
    for scheme, ref in out["reference"].items():
        assert ref["owned"] is True, scheme
        for attack, zero in (("ftal", 0), ("prune", 0.0)):
            [r] = [
                r
                for r in out["records"]
                if (r["attack"], r["scheme"], r["strength"]) == (attack, scheme, zero)
            ]
            assert r["retention"] == ref["retention"] and r["p_value"] == ref["p_value"]
            assert r["clean_accuracy"] == ref["clean_accuracy"] and r["accuracy_drop"] == 0
            assert r["owned"] is True and r["success"] is False


def test_attacker_data_is_disjoint_from_evaluation_data(attack_run):
    _, out, _ = attack_run
    split = out["split"]
    assert split["attacker"] + split["eval"] == 64 and split["attacker"] == 32
    att, ev = attack_runs.split_attacker(64, split["fraction"], 0)
    assert att.tolist() == split["attacker_indices"]
    assert not set(att) & set(ev) and sorted([*att, *ev]) == list(range(64))
    a2, _ = attack_runs.split_attacker(64, 0.5, 0)
    assert np.array_equal(att, a2)  # deterministic per seed
    with pytest.raises(ConfigError, match="data_fraction"):
        attack_runs.split_attacker(10, 0.01, 0)


@pytest.mark.parametrize(
    "owned, accuracy, reference, expected",
    [
        (False, 0.95, 0.97, True),  # removed, 2 points lost
        (False, 0.92, 0.97, True),  # exactly 5 points lost still counts
        (False, 0.91, 0.97, False),  # removed but 6 points lost: model ruined
        (True, 0.97, 0.97, False),  # still owned
        (False, 0.99, 0.97, True),  # accuracy gained
    ],
)
def test_wrt_success_criterion(owned, accuracy, reference, expected):
    assert attack_runs.wrt_success(owned, accuracy, reference) is expected


@pytest.mark.parametrize("n, k_classes, nulls", [(16, 4, None), (16, 4, [0.4]), (50, 10, [0.12])])
def test_decision_threshold_is_necessary_for_ownership(n, k_classes, nulls):
    thr = verify.null_threshold(nulls, 0.05).threshold if nulls else None
    cut = attack_runs.decision_threshold(n, k_classes, 1e-3, thr)
    labels = np.arange(n, dtype=np.int32) % k_classes  # varied: the permutation test applies
    for k in range(n + 1):
        pred = np.where(np.arange(n) < k, labels, (labels + 1) % k_classes).astype(np.int32)
        v = verify.verify_predictions(pred, labels, k_classes, alpha=1e-3, null_retentions=nulls)
        binom = next(t for t in v.tests if t["name"] == "binomial")
        # Without controls the binomial decides, beside the permutation test: at the cut-off
        # and above, the binomial and null rules pass; below it, the verdict is never owned.
        assert (binom["rejects"] and (thr is None or v.retention > thr)) == (v.retention >= cut)
        if v.retention < cut:
            assert not v.owned


def test_plot_cli_replots(attack_run, tmp_path):
    wd, _, _ = attack_run
    paths = plots.main([str(wd / "attacks.json"), "--out", str(tmp_path)])
    assert sorted(p.name for p in paths) == sorted(PNGS)
    assert all(p.stat().st_size > 1000 for p in paths)


def test_missing_source_is_a_clear_error(tmp_path):
    proc = run_mode(*TINY, "--config.mode=attack", f"--workdir={tmp_path}", check=False)
    assert proc.returncode != 0 and "attack.source" in proc.stderr
    assert "Traceback" not in proc.stderr
