"""Mode ``study``: the grid of cells x seeds x keys end to end on tiny data, its resume, its cell
syntax and the decision rules of claims C1-C4."""

import json
import shutil

import pytest
from test_runs import SECRET, TINY, run_mode

from jaxwm.errors import ConfigError
from jaxwm.runner import config, study, study_report

STUDY = [
    *TINY,
    "--config.mode=study",
    "--config.study.cells=('mixed: embed.clean_per_trigger=1',"
    "'stop: embed.clean_per_trigger=1; embed.target_retention=0.5')",
    "--config.embed.epochs=10",
    "--config.study.seeds=(0,)",
    "--config.study.num_keys=1",
    "--config.study.verdict_cell=stop",
    "--config.study.attack_kinds=('ftal','prune')",
    "--config.study.attack_max_drop=1.0",
    "--config.study.attack_cells=('stop',)",
    "--config.attack.ft_epochs=(0,1)",
    "--config.attack.prune_ratios=(0.0,0.5)",
    "--config.attack.batch_size=16",
]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    wd = tmp_path_factory.mktemp("study")
    return wd, run_mode(*STUDY, f"--workdir={wd}")


def test_study_writes_verdicts_and_every_unit(done):
    wd, proc = done
    text = (wd / "STUDY.md").read_text()
    for claim in ("C1", "C2", "C3", "C4"):
        line = next(x for x in text.splitlines() if x.startswith(f"- **{claim}: "))
        assert any(f"{claim}: {v}**" in line for v in ("confirmed", "refuted", "inconclusive"))
        assert "rule" in line or "Wilcoxon p" in line, line
    # One unit per cell: a mean without an interval, said so (intervals: the test below).
    assert "| stop | 1 | partitioned |" in text and "| mixed | 1 | baseline |" in text
    assert "(n=1, no interval)" in text and "Wilcoxon p" in text
    units = study.read_units(wd / study.UNITS_FILE)
    assert sorted((u["cell"], u["key"]) for u in units) == [("mixed", 0), ("stop", 0)]
    # attack_max_drop=1.0 lets every unit keep accuracy; attack_cells picks the one attacked.
    attacked = {u["cell"]: u["attacks"] is not None for u in units}
    assert attacked == {"mixed": False, "stop": True}
    assert not (wd / "units/mixed/s0-k0/attacks").exists()
    assert "on the units of cell(s) stop" in text and "min summed over the units" in text
    assert "| embedding epochs |" in text
    # One victim, shared by both cells; both methods of both cells started from it.
    assert len(list((wd / "victims").glob("*/model/meta.json"))) == 1
    assert len({u["victim_accuracy"] for u in units}) == 1
    # The same key in both cells: the same trigger set (same digest), so cells are paired too.
    digests = {
        (wd / f"units/{c}/s0-k0/watermark/DIGEST.txt").read_text() for c in ("mixed", "stop")
    }
    assert len(digests) == 1
    out = json.loads((wd / "study.json").read_text())
    assert out["cells"]["stop"]["partitioned"]["accuracy"]["n"] == 1
    for name in ("study_cells.png", "study_cells.pdf", "study_attacks.png"):
        assert (wd / name).stat().st_size > 0, name
    assert "[study 2/2] stop seed 0 key 0" in proc.stderr
    # stdout holds STUDY.md alone; the units' Table 1s went to stderr.
    assert proc.stdout.lstrip().startswith("# The deciding study") and "Table 1" not in proc.stdout
    assert proc.stderr.count("Table 1 analogue") == 2
    # Neither the owner's secret nor a derived key is written anywhere.
    keys = [SECRET, study.derived_key(SECRET, 0)]
    for f in wd.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".jsonl", ".md", ".txt"):
            assert not any(k in f.read_text() for k in keys), f


def _latest(wd):
    return {(u["cell"], u["seed"], u["key"]): u for u in study.read_units(wd / study.UNITS_FILE)}


def _no_key_written(wd, keys):
    for f in wd.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".jsonl", ".md", ".txt"):
            assert not any(k in f.read_text() for k in keys), f


def test_workers_give_the_records_of_one_process(done, tmp_path):
    # 4 units in 2 worker processes (so a worker runs two): the 2 that the one-process run of
    # `done` also ran must have the same record, field by field (wall time aside).
    proc = run_mode(*STUDY, f"--workdir={tmp_path}", "--config.study.num_keys=2",
                    "--config.study.workers=2")  # fmt: skip
    units = _latest(tmp_path)
    assert sorted(units) == [(c, 0, k) for c in ("mixed", "stop") for k in (0, 1)]
    ref = _latest(done[0])
    assert len(ref) == 2
    for k, u in ref.items():
        assert {f: v for f, v in units[k].items() if f != "wall_s"} == {
            f: v for f, v in u.items() if f != "wall_s"
        }, k
    assert units[("stop", 0, 1)]["attacks"] is not None  # attacked in a worker too
    # The parent trained the one victim and printed a progress line per unit; each unit's own
    # output (Table 1, attack table) is in its log.txt, not on the console.
    assert proc.stderr.count("training the victim") == 1
    assert "[study 4/4] stop seed 0 key 1: victim" in proc.stderr
    assert "Table 1 analogue" not in proc.stderr + proc.stdout
    for c, _, k in units:
        assert "Table 1 analogue" in (tmp_path / f"units/{c}/s0-k{k}/log.txt").read_text()
    assert proc.stdout.lstrip().startswith("# The deciding study")
    assert "(victims not included, 2 units at a time, over every invocation)" in proc.stdout
    _no_key_written(tmp_path, [SECRET, study.derived_key(SECRET, 0), study.derived_key(SECRET, 1)])
    # study.workers is not in a unit's fingerprint: one process reuses every unit.
    again = run_mode(*STUDY, f"--workdir={tmp_path}", "--config.study.num_keys=2")
    assert again.stderr.count("done earlier, skipped") == 4


def test_a_unit_failing_in_a_worker_is_one_error_naming_it(done, tmp_path):
    # The victim of `done` is reused; a file where mixed/s0-k0's directory goes fails that unit
    # inside its worker, at once. No unit is started after it; those running finish and stay.
    shutil.copytree(done[0] / "victims", tmp_path / "victims")
    (tmp_path / "units/mixed").mkdir(parents=True)
    (tmp_path / "units/mixed/s0-k0").write_text("in the way")
    proc = run_mode(*STUDY, f"--workdir={tmp_path}", "--config.study.num_keys=2",
                    "--config.study.workers=2", check=False)  # fmt: skip
    assert proc.returncode == 1
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
    assert line.startswith("error: study unit mixed seed 0 key 0 failed in a worker process: ")
    assert "FileExistsError" in line and "run the same command again to resume" in line
    units = _latest(tmp_path)
    assert ("mixed", 0, 0) not in units and ("mixed", 0, 1) in units
    assert len(units) < 4 and "training the victim" not in proc.stderr
    _no_key_written(tmp_path, [SECRET, study.derived_key(SECRET, 0), study.derived_key(SECRET, 1)])


def test_rerun_skips_finished_units_and_redoes_only_missing_ones(done):
    wd, _ = done
    path = wd / study.UNITS_FILE
    lines = path.read_text().splitlines()
    # A study killed after its first unit (the torn line a kill can leave is ignored).
    path.write_text(lines[0] + "\n" + lines[1][:20])
    proc = run_mode(*STUDY, f"--workdir={wd}")
    assert proc.stderr.count("done earlier, skipped") == 1
    assert "[study 2/2] stop seed 0 key 0: victim" in proc.stderr
    assert "training the victim" not in proc.stderr  # reused
    assert len(study.read_units(path)) == 2
    again = run_mode(*STUDY, f"--workdir={wd}")
    assert again.stderr.count("done earlier, skipped") == 2


def test_report_only_runs_nothing_and_says_the_grid_is_incomplete(done):
    wd, _ = done
    path = wd / study.UNITS_FILE
    before = path.read_bytes()
    # A second seed is planned but never run: the report rests on seed 0 and says so.
    proc = run_mode(*STUDY, f"--workdir={wd}", "--config.study.seeds=(0,1)",
                    "--config.study.report_only=True")  # fmt: skip
    assert proc.stderr.count("left out (study.report_only)") == 2
    assert proc.stderr.count("done earlier, skipped") == 2
    assert "training the victim" not in proc.stderr
    assert not list((wd / "victims").glob("*-s1"))
    assert path.read_bytes() == before
    text = (wd / "STUDY.md").read_text()
    assert "Incomplete grid: 2 of 4 planned units finished" in text
    assert "| stop | 1 | partitioned |" in text
    # The complete grid has no such line.
    run_mode(*STUDY, f"--workdir={wd}", "--config.study.report_only=True")
    assert "Incomplete grid" not in (wd / "STUDY.md").read_text()


def test_cells_parse_and_bad_cells_name_the_cell():
    cells = study.parse_cells(("a: embed.clean_per_trigger=2; watermark.kind=content", "b:"))
    assert cells == [("a", {"embed.clean_per_trigger": 2, "watermark.kind": "content"}), ("b", {})]
    cfg = config.defaults()
    sub = study.cell_config(cfg, *cells[0])
    assert sub.embed.clean_per_trigger == 2.0 and isinstance(sub.embed.clean_per_trigger, float)
    assert sub.mode == "pipeline" and cfg.embed.clean_per_trigger == -1.0  # cfg untouched
    # A unit's fingerprint changes with its key (so another secret redoes it), not otherwise.
    fp = [study.unit_fingerprint(sub, 0, (), study.derived_key(s, 0)) for s in ("a" * 40, "b" * 40)]
    assert fp[0] != fp[1]
    assert fp[0] == study.unit_fingerprint(sub, 0, (), study.derived_key("a" * 40, 0))
    # The default grid names only fields that exist, with values their checks accept.
    grid = {n: study.cell_config(cfg, n, o) for n, o in study.parse_cells(cfg.study.cells)}
    assert cfg.study.verdict_cell in grid and grid["large_d"].watermark.size == 1000
    assert grid["early_stop_0.85"].embed.target_retention == 0.85
    # A cell naming an operating point takes that point's fields, even from a resolved config.
    resolved = config.validate(config.defaults())
    d_alone = study.cell_config(resolved, "d_alone", {"embed.operating_point": "paper_literal"})
    assert (d_alone.embed.clean_per_trigger, d_alone.embed.target_retention) == (0.0, 0.0)
    assert grid["mixed_10"].embed.clean_per_trigger == 10.0
    assert grid["bn_all"].embed.bn_mode == "all"
    for bad, match in [
        (("a b: x=1",), "unique NAME"),
        (("a: embed.lr=1", "a: embed.lr=2"), "unique NAME"),
        (("a: embed.lr",), "not 'field=value'"),
    ]:
        with pytest.raises(ConfigError, match=match):
            study.parse_cells(bad)
    with pytest.raises(ConfigError, match="cell 'a' overrides 'embed.no_such'"):
        study.cell_config(cfg, "a", {"embed.no_such": 1})
    with pytest.raises(ConfigError, match="cell 'a'.*embed.target_retention"):
        study.cell_config(cfg, "a", {"embed.target_retention": 2.0})


def _unit(seed, key, victim, part, base, attacks=None, cell="paper"):
    return {"cell": cell, "seed": seed, "key": key, "victim_accuracy": victim, "attacks": attacks,
            "methods": {"partitioned": {"accuracy": part[0], "retention": part[1], "owned": True,
                                        "epochs": 30},
                        "baseline": {"accuracy": base[0], "retention": base[1], "owned": True,
                                     "epochs": 10 + key}}}  # fmt: skip


def _points(kind, success_from, retention=None, drops=None):
    strengths = (0, 1, 2, 4) if kind != "prune" else (0.0, 0.3, 0.6, 0.9)
    return [{"strength": s, "success": i >= success_from, "owned": i < success_from,
             "retention": 1.0 if retention is None else retention[i],
             "accuracy_drop": 0.0 if drops is None else drops[i], "clean_accuracy": 0.9}
            for i, s in enumerate(strengths)]  # fmt: skip


def _cfg():
    cfg = config.defaults()
    cfg.study.verdict_cell = "paper"
    return cfg


@pytest.mark.parametrize(
    "drops,verdict",
    [
        # 9 units, drops 0.2..0.6 points: upper bound well under 1 point.
        ([0.002, 0.003, 0.004, 0.005, 0.006, 0.004, 0.003, 0.005, 0.004], "confirmed"),
        # drops around 3 points: lower bound above 1 point.
        ([0.03, 0.028, 0.032, 0.031, 0.029, 0.03, 0.03, 0.03, 0.03], "refuted"),
        # straddles 1 point.
        ([0.0, 0.02, 0.0, 0.02, 0.01, 0.0, 0.02, 0.01, 0.01], "inconclusive"),
        ([0.0], "inconclusive"),  # one unit: no interval
    ],
)
def test_c1_rule(drops, verdict):
    units = [_unit(i, 0, 0.99, (0.99 - d, 0.85), (0.98, 0.85)) for i, d in enumerate(drops)]
    assert study_report.verdicts(units, _cfg())["C1"]["verdict"] == verdict


def test_c1_and_c4_need_matched_retention():
    # Measured on MNIST: partitioned stopped at 58% (early stop never fired), baseline at 86%.
    # With 9 clear units the accuracy rules alone would decide; unmatched retention must not.
    units = [_unit(i, 0, 0.99, (0.9895, 0.58), (0.96, 0.86)) for i in range(9)]
    v = study_report.verdicts(units, _cfg())
    assert v["C1"]["verdict"] == "inconclusive" and "not at the paper's retention" in v["C1"]["why"]
    assert v["C4"]["verdict"] == "inconclusive" and "retention not matched" in v["C4"]["why"]
    units = [_unit(i, 0, 0.99, (0.9895, 0.85), (0.96, 0.86)) for i in range(9)]
    v = study_report.verdicts(units, _cfg())
    assert (v["C1"]["verdict"], v["C4"]["verdict"]) == ("confirmed", "confirmed")


def test_c2_c3_c4_rules_follow_the_paired_tests():
    ft = ("ftll", "ftal", "rtll", "rtal")

    def attacks(part_from, base_from, keeps):
        pts = {
            k: {"partitioned": _points(k, part_from), "baseline": _points(k, base_from)} for k in ft
        }
        ret = [1.0, 0.9, 0.8 if keeps else 0.3, 0.1]
        pts["prune"] = {
            m: _points("prune", 9, ret, [0.0, 0.02, 0.05, 0.3]) for m in ("partitioned", "baseline")
        }
        return {"reference": {}, "points": pts}

    # Partitioned survives one more strength step than the baseline in all 9 units, keeps 2 more
    # points of accuracy, and retention holds under pruning in all 9: all three confirmed.
    units = [_unit(i, 0, 0.99, (0.98, 0.85), (0.96, 0.85), attacks(3, 2, True)) for i in range(9)]
    v = study_report.verdicts(units, _cfg())
    assert [v[c]["verdict"] for c in ("C2", "C3", "C4")] == ["confirmed"] * 3
    assert "p = 0.00391" in v["C4"]["why"] and "holds in 9 of 9" in v["C3"]["why"]
    # The other way round: refuted.
    units = [_unit(i, 0, 0.99, (0.96, 0.85), (0.98, 0.85), attacks(1, 2, False)) for i in range(9)]
    v = study_report.verdicts(units, _cfg())
    assert [v[c]["verdict"] for c in ("C2", "C3", "C4")] == ["refuted"] * 3
    # Three units only (p >= 0.25 at best), or nothing attacked: inconclusive.
    units = [_unit(i, 0, 0.99, (0.98, 0.85), (0.96, 0.85), attacks(3, 2, True)) for i in range(3)]
    v = study_report.verdicts(units, _cfg())
    assert [v[c]["verdict"] for c in ("C2", "C3", "C4")] == ["inconclusive"] * 3
    v = study_report.verdicts([_unit(0, 0, 0.9, (0.9, 0.8), (0.9, 0.8))], _cfg())
    assert v["C2"]["verdict"] == v["C3"]["verdict"] == "inconclusive"
    # Every ratio above 0 already loses more than 10 points: only the unpruned model is within
    # the drop, which would make C3 hold vacuously. Untested, so inconclusive, in 9 units too.
    coarse = attacks(3, 2, True)
    coarse["points"]["prune"] = {
        m: _points("prune", 9, [1.0, 0.2, 0.1, 0.1], [0.0, 0.2, 0.5, 0.6])
        for m in ("partitioned", "baseline")
    }
    units = [_unit(i, 0, 0.99, (0.98, 0.85), (0.96, 0.85), coarse) for i in range(9)]
    v = study_report.verdicts(units, _cfg())
    assert v["C3"]["verdict"] == "inconclusive" and "untested" in v["C3"]["why"], v["C3"]
    assert study_report.verdicts([], _cfg())["C1"]["why"].startswith("no finished unit")


def test_weakest_success_orders_by_strength():
    pts = _points("ftal", 2)
    assert study_report.weakest_success(pts[::-1], "ftal") == 2
    assert study_report.weakest_success(_points("ftal", 9), "ftal") == 4  # never: past the end


def test_study_md_has_intervals_over_seeds_and_keys(tmp_path):
    # 3 seeds x 3 keys in one cell: every figure is "mean [low, high] (n=9)".
    units = [_unit(s, k, 0.99, (0.985 - 0.001 * k, 0.85), (0.97 - 0.002 * s, 0.8 + 0.01 * k))
             for s in range(3) for k in range(3)]  # fmt: skip
    cfg = _cfg()
    cfg.study.cells = ("paper: embed.clean_per_trigger=2",)
    out = study_report.write(units, cfg, tmp_path, 1.0)
    text = (tmp_path / "STUDY.md").read_text()
    row = next(x for x in text.splitlines() if x.startswith("| paper | 9 | partitioned |"))
    # accuracy 98.40 [98.xx, 98.xx] (n=9): the mean of 98.5, 98.4, 98.3 (each thrice)
    assert "98.40 [" in row and row.count("(n=9)") == 4, row
    assert row.endswith("| 30.00 [30.00, 30.00] (n=9) |"), row  # epochs run, unscaled
    base = next(x for x in text.splitlines() if x.startswith("| paper | 9 | baseline |"))
    assert "| 11.00 [" in base, base  # 10, 11, 12 epochs: mean 11
    assert out["cells"]["paper"]["partitioned"]["accuracy"]["n"] == 9
    # drops 0.5-0.7 points (upper bound < 1): C1 confirmed; partitioned ahead in all 9: C4 too.
    assert out["verdicts"]["C1"]["verdict"] == out["verdicts"]["C4"]["verdict"] == "confirmed"
    assert (tmp_path / "study_cells.png").stat().st_size > 0


def test_attack_cells_name_cells_of_the_grid():
    assert study.attack_cells(("*",), ["a", "b"]) == {"a", "b"}
    assert study.attack_cells((), ["a", "b"]) == set()
    assert study.attack_cells(("b",), ["a", "b"]) == {"b"}
    with pytest.raises(ConfigError, match=r"study.attack_cells names 'c'.*\(a, b\)"):
        study.attack_cells(("a", "c"), ["a", "b"])
