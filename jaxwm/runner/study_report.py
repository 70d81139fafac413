"""What mode ``study`` writes from its units: ``study.json``, ``STUDY.md`` and the seed-band plots.

Every figure is a mean over the (seed, key) units of a cell with its Student-t 95% interval and
``n`` (:func:`jaxwm.stats.mean_interval`); partitioned against baseline is paired on the same
unit (:func:`jaxwm.stats.paired_comparison`: exact Wilcoxon signed-rank and sign tests). The
claims are decided on the units of ``study.verdict_cell`` by the rules of :func:`verdicts` (also
stated in README "The deciding study"); each verdict line says the numbers and the rule.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from jaxwm.runner import attack_registry, experiments
from jaxwm.runner.attack_tables import stronger
from jaxwm.stats import mean_interval, paired_comparison, sign_test

METHODS = ("partitioned", "baseline")
FINE_TUNING = ("ftll", "ftal", "rtll", "rtal")  # C2: "robust to fine-tuning"


def _ci(values: list[float]) -> dict[str, float] | None:
    return mean_interval(values).to_dict() if values else None


def _pct(stat: dict[str, float] | None, signed: bool = False, scale: float = 100.0) -> str:
    """``mean [low, high] (n=...)``, in points (``scale`` 100) or as is (``scale`` 1)."""
    if stat is None:
        return "—"
    sign = "+" if signed else ""
    if stat["n"] < 2:
        return f"{scale * stat['mean']:{sign}.2f} (n=1, no interval)"
    return (f"{scale * stat['mean']:{sign}.2f} [{scale * stat['low']:{sign}.2f}, "
            f"{scale * stat['high']:{sign}.2f}] (n={stat['n']})")  # fmt: skip


def weakest_success(points: list[dict[str, Any]], kind: str) -> int:
    """Index of the weakest strength at which the attack succeeded (WRT), in strength order.

    Args:
      points: One scheme's points of one attack kind.
      kind: The attack kind (fixes which way is stronger).

    Returns:
      The index among the sorted strengths; ``len(points)`` when no strength succeeded (the
      watermark outlasted the strongest attack that kept accuracy).
    """
    ordered = sorted(points, key=lambda p: stronger(kind, p["strength"]))
    return next((i for i, p in enumerate(ordered) if p["success"]), len(ordered))


def _c3_holds(points: list[dict[str, Any]], retention: float, drop: float) -> bool | None:
    """Retention stays >= ``retention`` at every pruning point that lost <= ``drop`` accuracy.

    None when no ratio above 0 lost <= ``drop``: the unpruned model alone would make the claim
    hold vacuously, so such a unit cannot test it (its grid needs smaller ratios).
    """
    within = [p for p in points if p["accuracy_drop"] <= drop]
    if not any(p["strength"] > 0 for p in within):
        return None
    return all(p["retention"] >= retention - 1e-9 for p in within)


def aggregate(units: list[dict[str, Any]], cells: list[str]) -> dict[str, Any]:
    """Per cell and method: clean accuracy, drop against the victim and retention, with intervals.

    Args:
      units: Finished unit records (see :func:`jaxwm.runner.study.run_unit`).
      cells: Cell names in the grid's order.

    Returns:
      ``{cell: {"n", "victim", methods..., "paired": {"accuracy", "retention"}}}``; a cell
      without finished units is left out.
    """
    out: dict[str, Any] = {}
    for cell in cells:
        us = sorted((u for u in units if u["cell"] == cell), key=lambda u: (u["seed"], u["key"]))
        if not us:
            continue
        row: dict[str, Any] = {"n": len(us), "victim": _ci([u["victim_accuracy"] for u in us])}
        for m in METHODS:
            acc = [u["methods"][m]["accuracy"] for u in us]
            row[m] = {
                "accuracy": _ci(acc),
                "drop": _ci([u["victim_accuracy"] - a for a, u in zip(acc, us, strict=True)]),
                "retention": _ci([u["methods"][m]["retention"] for u in us]),
                "owned": sum(u["methods"][m]["owned"] for u in us),
                # Epochs run (< embed.epochs when early stop fired): shows whether it matched.
                "epochs": _ci([float(u["methods"][m]["epochs"]) for u in us]),
            }
        row["paired"] = {}
        for what in ("accuracy", "retention"):
            c = paired_comparison([u["methods"]["partitioned"][what] for u in us],
                                  [u["methods"]["baseline"][what] for u in us])  # fmt: skip
            row["paired"][what] = {"difference": c["difference"].to_dict(), "wins": c["wins"],
                                   "losses": c["losses"], "p_wilcoxon": c["wilcoxon"].p_value,
                                   "p_sign": c["sign"].p_value}  # fmt: skip
        row["attacked"] = sum(u["attacks"] is not None for u in us)
        row["wall_s"] = sum(u.get("wall_s", 0.0) for u in us)
        out[cell] = row
    return out


def _paired_verdict(c: dict[str, Any], alpha: float, better: str, unit: str = "points",
                    scale: float = 100.0) -> tuple[str, str]:  # fmt: skip
    d, p = c["difference"], c["wilcoxon"].p_value
    text = (f"mean paired difference ({unit}) {_pct(d.to_dict(), True, scale)}, {c['wins']} wins / "
            f"{c['losses']} losses, exact Wilcoxon p = {p:.3g}")  # fmt: skip
    if p < alpha and d.mean > 0:
        return "confirmed", f"{text} < {alpha:g}, {better}"
    if p < alpha and d.mean < 0:
        return "refuted", f"{text} < {alpha:g}, the other way round"
    return "inconclusive", f"{text} (not < {alpha:g})"


def verdicts(units: list[dict[str, Any]], cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """C1-C4 decided on the units of ``study.verdict_cell``, each with its numbers and rule.

    Rules (``alpha = study.alpha``; all paired on the same (seed, key)):
      C1: the partitioned drop against the victim: confirmed when the upper 95% t bound is
        <= ``study.c1_max_drop``, refuted when the lower bound is above it.
      C2: per attacked unit, the sum over FTLL/FTAL/RTLL/RTAL of (index of the weakest WRT-
        successful strength, partitioned minus baseline; never = one past the strongest):
        confirmed when positive with exact Wilcoxon p < alpha, refuted when negative likewise.
      C3: per attacked unit, whether partitioned retention stays >= ``study.c3_retention`` at every
        activation-frequency pruning ratio that lost <= ``study.c3_acc_drop`` accuracy: confirmed
        when it holds in more units than not with exact sign-test p < alpha, refuted when it
        fails likewise.
      C4: partitioned minus baseline clean accuracy (the cell matches retention by early stop):
        confirmed when positive with exact Wilcoxon p < alpha, refuted when negative likewise.
      C1 needs the partitioned mean retention within ``study.retention_tolerance`` of
        ``study.paper_retention``, and C4 the methods' mean retention difference within it;
        otherwise they are inconclusive (an early stop that never fired matches nothing).
      Anything else, including too few units, is inconclusive.

    Returns:
      ``{"C1": {"verdict", "why"}, ...}``.
    """
    s, cell = cfg.study, cfg.study.verdict_cell
    us = sorted((u for u in units if u["cell"] == cell), key=lambda u: (u["seed"], u["key"]))
    if not us:
        why = f"no finished unit in study.verdict_cell {cell!r}"
        return {c: {"verdict": "inconclusive", "why": why} for c in ("C1", "C2", "C3", "C4")}
    out: dict[str, Any] = {}
    part = [u["methods"]["partitioned"] for u in us]
    drop = mean_interval(
        [u["victim_accuracy"] - p["accuracy"] for u, p in zip(us, part, strict=True)]
    )
    ret = mean_interval([p["retention"] for p in part])
    lim = 100 * s.c1_max_drop
    why = (f"partitioned drop (points) {_pct(drop.to_dict())} at retention (%) {_pct(ret.to_dict())}; "
           f"rule: upper 95% bound <= {lim:g} confirms, lower bound > {lim:g} refutes")  # fmt: skip
    v = ("confirmed" if drop.high <= s.c1_max_drop else "refuted" if drop.low > s.c1_max_drop
         else "inconclusive")  # fmt: skip
    if abs(ret.mean - s.paper_retention) > s.retention_tolerance:
        # A drop measured at another retention says nothing about the paper's operating point.
        v, why = (
            "inconclusive",
            (
                f"{why}; not at the paper's retention: partitioned mean retention "
                f"{100 * ret.mean:.1f}% is not within {100 * s.retention_tolerance:g} points of "
                f"{100 * s.paper_retention:g}% (embed longer or at a higher rate)"
            ),
        )
    out["C1"] = {"verdict": v, "why": why}

    attacked = [u for u in us if u["attacks"] is not None]
    kinds = [
        k for k in FINE_TUNING if attacked and all(k in u["attacks"]["points"] for u in attacked)
    ]
    if kinds:
        diffs = [sum(weakest_success(u["attacks"]["points"][k]["partitioned"], k)
                     - weakest_success(u["attacks"]["points"][k]["baseline"], k) for k in kinds)
                 for u in attacked]  # fmt: skip
        c = paired_comparison(diffs, [0.0] * len(diffs))
        v, why = _paired_verdict(
            c, s.alpha, "partitioned needs stronger attacks", "strength steps", 1.0
        )
        out["C2"] = {"verdict": v, "why": f"{'+'.join(kinds)}, {len(diffs)} attacked units: {why}"}
    else:
        out["C2"] = {"verdict": "inconclusive", "why": "no attacked unit ran FTLL/FTAL/RTLL/RTAL"}

    pruned = [u for u in attacked if "prune" in u["attacks"]["points"]]
    tested = [_c3_holds(u["attacks"]["points"]["prune"]["partitioned"], s.c3_retention,
                        s.c3_acc_drop) for u in pruned]  # fmt: skip
    holds = [h for h in tested if h is not None]
    if pruned and not holds:
        out["C3"] = {"verdict": "inconclusive", "why": (
            f"in none of {len(pruned)} pruned units did a ratio above 0 lose <= "
            f"{100 * s.c3_acc_drop:g} points, so the claim is untested (add smaller "
            f"attack.prune_ratios); rule: retention >= {100 * s.c3_retention:g}% at every "
            f"ratio losing <= {100 * s.c3_acc_drop:g} points, tested on units with such a "
            "ratio above 0")}  # fmt: skip
    elif pruned:
        t = sign_test([1.0 if h else -1.0 for h in holds])
        untested = len(tested) - len(holds)
        why = (
            f"holds in {sum(holds)} of {len(holds)} attacked units"
            + (f" ({untested} more untested: no ratio above 0 within the drop)" if untested else "")
            + ", exact sign test p = "
            f"{t.p_value:.3g}; rule: retention >= {100 * s.c3_retention:g}% at every ratio "
            f"losing <= {100 * s.c3_acc_drop:g} points, in more units than not at p < {s.alpha:g}"
        )
        k = sum(holds)
        v = ("confirmed" if t.p_value < s.alpha and 2 * k > len(holds) else
             "refuted" if t.p_value < s.alpha and 2 * k < len(holds) else "inconclusive")  # fmt: skip
        out["C3"] = {"verdict": v, "why": why}
    else:
        out["C3"] = {"verdict": "inconclusive", "why": "no attacked unit ran prune"}

    c = paired_comparison([p["accuracy"] for p in part],
                          [u["methods"]["baseline"]["accuracy"] for u in us])  # fmt: skip
    rdiff = paired_comparison(
        [p["retention"] for p in part], [u["methods"]["baseline"]["retention"] for u in us]
    )["difference"]
    v, why = _paired_verdict(c, s.alpha, "partitioned keeps more accuracy")
    if abs(rdiff.mean) > s.retention_tolerance:  # "at equal retention" is the claim's premise
        v, why = (
            "inconclusive",
            (
                f"{why}; retention not matched (mean difference beyond "
                f"{100 * s.retention_tolerance:g} points)"
            ),
        )
    out["C4"] = {"verdict": v, "why": f"clean accuracy, partitioned - baseline: {why}; retention "
                 f"difference (points) {_pct(rdiff.to_dict(), signed=True)}"}  # fmt: skip
    return out


def render(agg: dict[str, Any], verdict: dict[str, Any], cfg: ml_collections.ConfigDict,
           wall_s: float, plots: list[Path]) -> str:  # fmt: skip
    """``STUDY.md``: the verdicts, the per-cell table and the paired comparisons."""
    s = cfg.study
    total_s = sum(row["wall_s"] for row in agg.values())
    # One process trains a victim inside the first unit that needs it; with study.workers > 1
    # the victims are trained before the units start, and units overlap in time.
    victims = "victims included" if s.workers == 1 else (
        f"victims not included, {s.workers} units at a time")  # fmt: skip
    lines = [
        "# The deciding study (jaxwm mode=study)", "",
        f"Data {cfg.data.source}, model widths {tuple(cfg.model.widths)} stages "
        f"{tuple(cfg.model.stage_sizes)}; victim seeds {tuple(s.seeds)} x {s.num_keys} watermark "
        f"key(s) per cell; attacks {', '.join(s.attack_kinds) or 'none'} on the units of "
        f"cell(s) {', '.join(s.attack_cells) or 'none'} whose partitioned model lost <= "
        f"{100 * s.attack_max_drop:g} points. Wall time: {total_s / 60:.1f} min summed over the "
        f"units ({victims}, over every invocation), {wall_s:.0f} s this invocation. "
        "Figures: mean [95% t interval] (n units) in percent / points.", "",
    ]  # fmt: skip
    planned = len(s.cells) * len(s.seeds) * s.num_keys
    finished = sum(row["n"] for row in agg.values())
    if finished < planned:  # a time-boxed run rendered with study.report_only, say
        lines += [
            f"**Incomplete grid: {finished} of {planned} planned units finished**; the "
            "cells and verdicts below rest on those alone.",
            "",
        ]
    lines += [
        f"## Verdicts (decided on cell {s.verdict_cell!r})", "",
    ]  # fmt: skip
    names = {"C1": "partitioned keeps clean accuracy within the allowed drop at the paper's retention",
             "C2": "partitioned is more robust to fine-tuning than the baseline (matched accuracy, WRT)",
             "C3": "under activation-frequency pruning retention holds until accuracy drops",
             "C4": "partitioned keeps more accuracy than the baseline at equal retention"}  # fmt: skip
    lines += [f"- **{c}: {v['verdict']}** — {names[c]}: {v['why']}." for c, v in verdict.items()]
    lines += ["", "## Per cell", "",
              "| cell | n | method | clean acc % | drop vs victim (points) | retention % | owned "
              "| embedding epochs |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for cell, row in agg.items():
        lines.append(f"| {cell} | {row['n']} | victim | {_pct(row['victim'])} | — | — | — | — |")
        for m in METHODS:
            r = row[m]
            lines.append(f"| {cell} | {row['n']} | {m} | {_pct(r['accuracy'])} | {_pct(r['drop'])} "
                         f"| {_pct(r['retention'])} | {r['owned']}/{row['n']} "
                         f"| {_pct(r['epochs'], scale=1.0)} |")  # fmt: skip
    lines += ["", "## Paired comparisons (partitioned - baseline, same victim and key)", "",
              "| cell | quantity | mean difference (points) | wins/losses | Wilcoxon p | sign p |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for cell, row in agg.items():
        for what, c in row["paired"].items():
            lines.append(f"| {cell} | {what} | {_pct(c['difference'], signed=True)} | "
                         f"{c['wins']}/{c['losses']} | {c['p_wilcoxon']:.3g} | {c['p_sign']:.3g} |")  # fmt: skip
    lines += ["", "Plots: " + (", ".join(p.name for p in plots) or "none"), ""]
    return "\n".join(lines)


def plot(units: list[dict[str, Any]], agg: dict[str, Any], cfg: ml_collections.ConfigDict,
         out_dir: Path) -> list[Path]:  # fmt: skip
    """``study_cells`` (accuracy and retention per cell, 95% intervals and every unit) and
    ``study_attacks`` (retention vs strength in the verdict cell, mean ± std over units)."""
    import matplotlib  # on first use: the other modes never load matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"partitioned": "tab:blue", "baseline": "tab:orange"}
    written: list[Path] = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    cells = list(agg)
    for ax, what, label in ((axes[0], "accuracy", "clean accuracy %"),
                            (axes[1], "retention", "retention on D %")):  # fmt: skip
        for j, m in enumerate(METHODS):
            x = np.arange(len(cells)) + (j - 0.5) * 0.3
            st = [agg[c][m][what] for c in cells]
            mean = np.array([100 * s["mean"] for s in st])
            err = np.array([[0 if s["n"] < 2 else 100 * (s["mean"] - s["low"]) for s in st],
                            [0 if s["n"] < 2 else 100 * (s["high"] - s["mean"]) for s in st]])  # fmt: skip
            ax.errorbar(
                x, mean, yerr=err, fmt="o", color=colors[m], capsize=4, label=f"{m} (95% CI)"
            )
            for i, c in enumerate(cells):
                ys = [100 * u["methods"][m][what] for u in units if u["cell"] == c]
                ax.scatter([x[i]] * len(ys), ys, s=8, color=colors[m], alpha=0.4)
        if what == "accuracy":
            ax.plot(np.arange(len(cells)), [100 * agg[c]["victim"]["mean"] for c in cells], "k_",
                    markersize=14, label="victim (mean)")  # fmt: skip
        ax.set_xticks(np.arange(len(cells)), cells, rotation=30, ha="right")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Deciding study: {cfg.data.source} (dots: units = seeds x keys)", fontsize=9)
    fig.tight_layout()
    for ext in ("pdf", "png"):
        fig.savefig(out_dir / f"study_cells.{ext}", dpi=120)
        written.append(out_dir / f"study_cells.{ext}")
    plt.close(fig)

    attacked = [u for u in units if u["cell"] == cfg.study.verdict_cell and u["attacks"]]
    kinds = [
        k
        for k in cfg.study.attack_kinds
        if attacked and all(k in u["attacks"]["points"] for u in attacked)
    ]
    if kinds:
        # At most three panels a row: six in one row drew 10 pt text in a 19 in wide figure.
        cols = min(3, len(kinds))
        rows = -(-len(kinds) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(7, 2.3 * rows + 0.4), squeeze=False)
        for ax in axes.flat[len(kinds) :]:
            ax.set_visible(False)
        for ax, k in zip(axes.flat, kinds, strict=False):
            for m in METHODS:
                curves = [sorted(u["attacks"]["points"][k][m], key=lambda p: stronger(k, p["strength"]))
                          for u in attacked]  # fmt: skip
                xs = [p["strength"] for p in curves[0]]
                ys = 100 * np.array([[p["retention"] for p in c] for c in curves])
                mu, sd = ys.mean(0), ys.std(0, ddof=1) if len(ys) > 1 else np.zeros(ys.shape[1])
                ax.plot(xs, mu, "o-", color=colors[m], label=m, markersize=3)
                ax.fill_between(xs, mu - sd, mu + sd, color=colors[m], alpha=0.2)
            entry = attack_registry.get(k)
            ax.set_title(entry.short, fontsize=8)
            ax.set_xlabel(entry.axis, fontsize=7)
            ax.tick_params(labelsize=7)
            ax.set_ylim(-2, 102)
            ax.grid(alpha=0.3)
        for row in axes:
            row[0].set_ylabel("retention %", fontsize=7)
        axes[0][0].legend(fontsize=6)
        fig.suptitle(
            f"Attacks in cell {cfg.study.verdict_cell} ({len(attacked)} units)", fontsize=9
        )
        fig.tight_layout()
        for ext in ("pdf", "png"):
            fig.savefig(out_dir / f"study_attacks.{ext}", dpi=120)
            written.append(out_dir / f"study_attacks.{ext}")
        plt.close(fig)
    return written


def write(units: list[dict[str, Any]], cfg: ml_collections.ConfigDict, workdir: Path,
          wall_s: float) -> dict[str, Any]:  # fmt: skip
    """Writes ``study.json``, ``STUDY.md`` and the plots from the finished units; prints STUDY.md.

    Returns:
      ``{"cells": aggregate, "verdicts": ..., "units": n, "plots": [...]}``.
    """
    cells = [c.partition(":")[0].strip() for c in cfg.study.cells]
    agg = aggregate(units, cells)
    verdict = verdicts(units, cfg)
    plots = plot(units, agg, cfg, workdir) if cfg.study.plots and agg else []
    text = render(agg, verdict, cfg, wall_s, plots)
    (workdir / "STUDY.md").write_text(text)
    out = {"cells": agg, "verdicts": verdict, "units": len(units), "plots": [str(p) for p in plots],
           "environment": experiments.environment(), "wall_s": wall_s}  # fmt: skip
    experiments.write_json(workdir / "study.json", out)
    print(text, file=sys.stdout)
    return out
