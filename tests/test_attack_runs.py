"""Mode ``attack`` end to end on a tiny pipeline run, and its success criterion and data split."""

import csv
import dataclasses
import json
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from test_runs import SECRET, TINY, run_mode

from jaxwm import attacks, verify
from jaxwm.engine import checkpoint
from jaxwm.errors import ConfigError
from jaxwm.runner import attack_registry, attack_runs, attack_store, fingerprint, plots

ATTACK = [
    "--config.mode=attack",
    "--config.attack.kinds=('ftal','prune','quantize')",
    "--config.attack.ft_epochs=(0,1)",
    "--config.attack.prune_ratios=(0.0,0.5)",
    "--config.attack.quant_bits=(8,)",
    "--config.attack.batch_size=16",
    "--config.attack.figure_widths=('single',)",  # both widths: tests/test_plots.py
]
FIGURES = tuple(f"{stem}_single.{fmt}" for stem in ("fig2_finetune", "fig3_pruning",
                "attacks_other", "attacks_scatter") for fmt in ("pdf", "png"))  # fmt: skip


@pytest.fixture(scope="module")
def pipeline_src(tmp_path_factory):
    src = tmp_path_factory.mktemp("pipeline")
    run_mode(*TINY, f"--workdir={src}")
    return src


@pytest.fixture(scope="module")
def attack_run(tmp_path_factory, pipeline_src):
    src = pipeline_src
    wd = tmp_path_factory.mktemp("attack")
    proc = run_mode(*TINY, *ATTACK, f"--config.attack.source={src}", f"--workdir={wd}")
    return wd, json.loads((wd / "attacks.json").read_text()), proc


def test_writes_results_table_and_plots(attack_run):
    wd, out, proc = attack_run
    for name in ("attacks.json", "attacks.csv", "attacks.md", *FIGURES):
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
    kind_specific = {"attacker_retention", "retention_owner_head", "pruned_fraction"}
    fields = set(attack_runs.CSV_FIELDS) - kind_specific
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
    paths = plots.main([str(wd / "attacks.json"), "--out", str(tmp_path), "--widths", "single"])
    assert sorted(p.name for p in paths) == sorted(FIGURES)
    assert all(p.stat().st_size > 1000 for p in paths)


def test_missing_source_is_a_clear_error(tmp_path):
    proc = run_mode(*TINY, "--config.mode=attack", f"--workdir={tmp_path}", check=False)
    assert proc.returncode != 0 and "attack.source" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_train_split_attacker_never_sees_an_evaluation_image():
    rng = np.random.RandomState(0)
    # Train images are even-valued, test images odd: any mix-up shows in the values.
    ds = SimpleNamespace(
        train_images=(2 * rng.randint(0, 100, (40, 4, 4, 1))).astype(np.uint8),
        train_labels=rng.randint(0, 4, 40).astype(np.int32),
        test_images=(2 * rng.randint(0, 100, (20, 4, 4, 1)) + 1).astype(np.uint8),
        test_labels=rng.randint(0, 4, 20).astype(np.int32),
    )
    x_att, y_att, x_eval, y_eval, info = attack_runs.attacker_data(ds, "train", 0.5, 0)
    assert len(x_att) == 20 and np.all(x_att % 2 == 0)  # from the training split only
    assert np.array_equal(x_eval, ds.test_images) and np.array_equal(y_eval, ds.test_labels)
    assert np.array_equal(x_att, ds.train_images[info["attacker_indices"]])
    assert (info["attacker_split"], info["eval_split"]) == ("train", "test")
    x_all, *_ = attack_runs.attacker_data(ds, "train", 1.0, 0)
    assert np.array_equal(x_all, ds.train_images)  # Adi et al.: the whole training set
    x_t, _, x_e, _, info_t = attack_runs.attacker_data(ds, "test", 0.5, 0)
    assert np.all(x_t % 2 == 1) and len(x_t) + len(x_e) == 20 and info_t["attacker_split"] == "test"
    with pytest.raises(ConfigError, match="data_fraction"):
        attack_runs.attacker_data(ds, "test", 1.0, 0)  # the test split must keep an evaluation


@pytest.mark.parametrize("split", ["test", "train"])
def test_eval_images_is_a_fixed_subset_of_the_evaluation_share(split):
    # Every image unique (its index in the pixels), so membership can be checked exactly.
    n = 200
    ids = np.arange(n, dtype=np.int32)
    ds = SimpleNamespace(
        train_images=(ids[:, None, None, None] + 1000).repeat(2, axis=1),
        train_labels=ids % 10,
        test_images=ids[:, None, None, None].repeat(2, axis=1),
        test_labels=ids % 10,
    )
    x_att, y_att, x_all, y_all, info_all = attack_runs.attacker_data(ds, split, 0.25, 3)
    x_a2, y_a2, x_sub, y_sub, info = attack_runs.attacker_data(ds, split, 0.25, 3, eval_images=40)
    assert np.array_equal(x_a2, x_att) and np.array_equal(y_a2, y_att)  # attacker unchanged
    assert len(x_sub) == len(y_sub) == info["eval"] == 40
    assert info["eval_available"] == info_all["eval"] == len(x_all)
    full = {int(v) for v in x_all[:, 0, 0, 0]}
    sub = [int(v) for v in x_sub[:, 0, 0, 0]]
    assert set(sub) <= full and len(set(sub)) == 40  # distinct images of the evaluation share
    assert np.array_equal(y_sub, np.asarray(sub) % 10)  # labels travel with their images
    assert not set(sub) & {int(v) for v in x_att[:, 0, 0, 0]}
    again = attack_runs.attacker_data(ds, split, 0.25, 3, eval_images=40)[2]
    other = attack_runs.attacker_data(ds, split, 0.25, 4, eval_images=40)[2]
    assert np.array_equal(again, x_sub) and not np.array_equal(other, x_sub)  # per seed
    assert sub != sorted(full)[:40]  # drawn at random, not the first 40
    with pytest.raises(ConfigError, match="attack.eval_images=1000.*holds"):
        attack_runs.attacker_data(ds, split, 0.25, 3, eval_images=1000)


def test_variant_attacks_record_their_columns(attack_run, tmp_path):
    # The same pipeline as attack_run: Liu fine-pruning, scoped per-layer pruning, RTLL read
    # both ways, all on the training split.
    _, out, _ = attack_run
    run_mode(*TINY, "--config.mode=attack", f"--config.attack.source={out['source']}",
             "--config.attack.kinds=('rtll','prune','liu_fine_prune')",
             "--config.attack.schemes=('partitioned',)", "--config.attack.ft_epochs=(1,)",
             "--config.attack.prune_ratios=(0.5,)", "--config.attack.prune_scope=all",
             "--config.attack.prune_ranking=layer", "--config.attack.liu_max_drop=(0.04,1.0)",
             "--config.attack.fine_prune_epochs=0", "--config.attack.liu_layer=layer1/block0",
             "--config.attack.data_split=train",
             "--config.attack.batch_size=16", "--config.attack.plots=False",
             f"--workdir={tmp_path}")  # fmt: skip
    new = json.loads((tmp_path / "attacks.json").read_text())
    assert new["split"]["attacker_split"] == "train" and new["split"]["eval"] == 64
    lines = (tmp_path / "attacks.csv").read_text().splitlines()
    rows = {(r["attack"], r["strength"]): r for r in csv.DictReader(lines)}
    assert 0 <= float(rows["rtll", "1"]["retention_owner_head"]) <= 1
    assert rows["prune", "0.5"]["retention_owner_head"] == ""  # only RT* swap a head
    liu = [float(rows["liu_fine_prune", s]["pruned_fraction"]) for s in ("0.04", "1.0")]
    assert liu[0] <= liu[1] == 15 / 16  # width 16: all but one channel at drop 1.0
    assert rows["liu_fine_prune", "1.0"]["unit"] == "max_drop"


def _count_points(monkeypatch, fail_after=None):
    """Wraps every kind's points function: counts the points it yields, optionally raising
    after ``fail_after`` of them (a run interrupted between two points)."""
    yielded = []

    def wrap(entry):
        def points(*args):
            for point in entry.points(*args):
                if fail_after is not None and len(yielded) == fail_after:
                    raise KeyboardInterrupt  # Ctrl-C between two points
                yielded.append((entry.name, point[0]))
                yield point

        return dataclasses.replace(entry, points=points)

    for name, entry in list(attack_registry.REGISTRY.items()):
        monkeypatch.setitem(attack_registry.REGISTRY, name, wrap(entry))
    return yielded


def test_killed_attack_resumes_without_redoing_points(attack_run, pipeline_src, tmp_path):
    wd, out, _ = attack_run
    args = [*TINY, *ATTACK, f"--config.attack.source={pipeline_src}", f"--workdir={tmp_path}"]
    with pytest.MonkeyPatch.context() as mp:
        _count_points(mp, fail_after=3)  # ftal 0 and 1, prune 0.0 of partitioned
        proc = run_mode(*args, check=False)
    assert proc.returncode == 1 and "interrupted;" in proc.stderr
    assert f"3 attack records in {tmp_path / attack_store.FILE}" in proc.stderr
    assert len(attack_store.read(tmp_path / attack_store.FILE)) == 3
    with (tmp_path / attack_store.FILE).open("a") as f:
        f.write('{"attack": "prune", "scheme": "parti')  # a kill in the middle of a write
    with pytest.MonkeyPatch.context() as mp:
        again = _count_points(mp)
        proc = run_mode(*args, "--config.attack.plots=False")  # plots do not change records
    assert len(again) == len(out["records"]) - 3
    # Only the baseline's ftal 0/1 and prune 0.0 run again; prune 0.5 runs for both schemes.
    assert [again.count(p) for p in (("ftal", 0), ("ftal", 1), ("prune", 0.0))] == [1, 1, 1]
    assert again.count(("prune", 0.5)) == 2
    assert "partial last record" in proc.stderr and "3 points recorded" in proc.stderr
    lines = (tmp_path / attack_store.FILE).read_text().splitlines()
    assert len(lines) == len(out["records"])  # no duplicate, no torn line
    assert (tmp_path / "attacks.csv").read_text() == (wd / "attacks.csv").read_text()
    # Everything recorded: a third run attacks nothing and writes the same table.
    with pytest.MonkeyPatch.context() as mp:
        third = _count_points(mp)
        run_mode(*args)
    assert (
        third == [] and (tmp_path / "attacks.csv").read_text() == (wd / "attacks.csv").read_text()
    )


def test_changed_attack_field_is_refused_or_restarted(attack_run, pipeline_src, tmp_path):
    args = [*TINY, "--config.mode=attack", "--config.attack.kinds=('quantize',)",
            "--config.attack.quant_bits=(8,)", "--config.attack.plots=False",
            f"--config.attack.source={pipeline_src}", f"--workdir={tmp_path}"]  # fmt: skip
    run_mode(*args)
    proc = run_mode(*args, "--config.attack.data_fraction=0.25", check=False)
    assert proc.returncode == 1 and "attack.data_fraction 0.5 -> 0.25" in proc.stderr
    assert "restart=True" in proc.stderr and "Traceback" not in proc.stderr
    run_mode(*args, "--config.attack.data_fraction=0.25", "--config.restart=True")
    # The pipeline's own directory is not an attack directory: its fingerprint stays.
    before = (pipeline_src / "fingerprint.json").read_text()
    proc = run_mode(*args[:-1], f"--workdir={pipeline_src}", check=False)
    assert proc.returncode == 1 and "'pipeline' run, not attack records" in proc.stderr
    assert (pipeline_src / "fingerprint.json").read_text() == before
    [old] = (tmp_path / "replaced").glob("*/attacks.jsonl")
    assert len(attack_store.read(old)) == len(attack_store.read(tmp_path / "attacks.jsonl")) == 2


def test_save_models_writes_loadable_attacked_models(pipeline_src, tmp_path):
    run_mode(*TINY, "--config.mode=attack", "--config.attack.kinds=('quantize',)",
             "--config.attack.quant_bits=(4,)", "--config.attack.schemes=('partitioned',)",
             "--config.attack.plots=False", "--config.attack.save_models=True",
             f"--config.attack.source={pipeline_src}", f"--workdir={tmp_path}")  # fmt: skip
    params, state, meta = checkpoint.load_model(tmp_path / "attacked/partitioned/quantize/4")
    src_params, _, _ = checkpoint.load_model(pipeline_src / "partitioned")
    assert (meta["kind"], meta["strength"], meta["scheme"]) == ("quantize", 4, "partitioned")
    assert meta["source_fingerprint"] == fingerprint.model_record(pipeline_src / "partitioned")
    want = attacks.quantize(src_params, 4)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_jsonl_store_drops_a_torn_last_line(tmp_path):
    path = tmp_path / attack_store.FILE
    recs = [{"scheme": "baseline", "attack": "noise", "strength": s, "retention": 0.5}
            for s in (0.0, 0.1)]  # fmt: skip
    for r in recs:
        attack_store.append(path, r)
    attack_store.append(path, recs[0])  # recorded twice: the first record counts
    intact = path.read_bytes()
    path.write_bytes(intact + b'{"scheme": "baseline", "att')
    assert attack_store.read(path) == recs
    assert path.read_bytes() == intact  # cut off, so the next append starts a clean line
    attack_store.append(path, {**recs[0], "strength": 0.2})
    assert [r["strength"] for r in attack_store.read(path)] == [0.0, 0.1, 0.2]
    path.write_bytes(b"not json\n" + intact)  # an edited file is not silently thinned
    with pytest.raises(ConfigError, match="line 1"):
        attack_store.read(path)
