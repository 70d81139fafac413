"""Figures of an attack sweep (``attacks.json`` of mode ``attack``), sized for a paper.

* ``fig2_finetune`` -- the paper's Figure 2 analogue: watermark retention (solid) and clean
  accuracy (dashed) of both schemes against fine-tuning epochs, one panel per fine-tuning
  attack in the Watermark-Robustness-Toolbox order FTLL, FTAL, RTLL, RTAL (then the adaptive
  attacker);
* ``fig3_pruning`` -- Figure 3 analogue: the same against the pruning ratio (activation
  frequency first, as in the paper, then fine-pruning and magnitude pruning when run);
* ``attacks_other`` -- quantization, weight noise, distillation and overwriting;
* ``attacks_scatter`` -- retention against clean accuracy of every attacked model, one panel
  per attack family, each attack's points joined in order of strength, with the decision
  threshold, chance, and each scheme's unattacked model and 5-point accuracy bound: points
  below the threshold and right of the bound are Watermark-Robustness-Toolbox successes.

Each is written as PDF and 300 dpi PNG at double-column width (7 in, ``<name>.pdf``) and
single-column width (3.4 in, ``<name>_single.pdf``); see :mod:`jaxwm.runner.plot_layout`.
Given several seeds' results, every curve is their mean with a ± 1 std band.
Each attack's figure, panel, title, axis name and spacing are declared by its entry in
:mod:`jaxwm.runner.attack_registry`.

Re-plot finished runs: ``python -m jaxwm.runner.plots runs/demo_attack/attacks.json [MORE.json
...] [--out DIR]`` (several files: one per seed, pooled).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxwm.runner import attack_registry
from jaxwm.runner.plot_layout import (
    WIDTHS,
    Kind,
    kind_of,
    mean_of,
    save,
    scheme_style,
    schemes,
    series,
    strength_axis,
    style,
)

# (group of jaxwm.runner.attack_registry, file stem, what the figure shows): an attack's entry
# names its group.
FIGURES = (
    ("finetune", "fig2_finetune", "Figure 2 analogue: fine-tuning"),
    ("pruning", "fig3_pruning", "Figure 3 analogue: pruning"),
    ("other", "attacks_other", "Other removal attacks"),
)
SCATTER = "attacks_scatter"
# Across datasets (mode reproduce), laid out as the paper's figures: one panel per dataset.
DATASET_FIGURES = (("ftal", "fig2_datasets"), ("prune", "fig3_datasets"))
GROUP_NAMES = {"finetune": "fine-tuning", "pruning": "pruning", "other": "other attacks"}
Results = dict[str, Any] | Sequence[dict[str, Any]]


def _runs(results: Results) -> list[dict[str, Any]]:
    return [results] if isinstance(results, dict) else list(results)


def _band(ax, x, mean, std, color) -> bool:
    ok = np.isfinite(std)
    if ok.sum() < 1:
        return False
    ax.fill_between(x[ok], (mean - std)[ok], (mean + std)[ok], color=color, alpha=0.18, lw=0)
    return True


def _reference_lines(ax, runs) -> None:
    thr = mean_of(runs, "decision_threshold")
    if thr is not None:
        ax.axhline(100 * thr, color="black", ls=":", lw=0.9)
    chance = mean_of(runs, "chance")
    if chance is not None:
        ax.axhline(100 * chance, color="gray", ls="-.", lw=0.8)


def _legend_handles(runs, banded: bool, curves: bool, seeds: str = "", bounds=None) -> list:
    """Legend entries; ``bounds``: (schemes, points) for the scatter's unattacked stars and
    accuracy bounds."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = []
    for scheme in schemes(runs):
        color, marker = scheme_style(scheme)
        if curves:
            handles += [
                Line2D([], [], color=color, marker=marker, label=f"{scheme}: retention"),
                Line2D([], [], color=color, marker=marker, ls="--", mfc="none",
                       label=f"{scheme}: clean accuracy"),
            ]  # fmt: skip
        else:  # in the scatter colours are attacks: a scheme is a marker and a line style
            ls = "-" if scheme == schemes(runs)[0] else "--"
            handles.append(
                Line2D([], [], color="dimgray", marker=marker, ls=ls, lw=0.7, label=scheme)
            )
    if mean_of(runs, "decision_threshold") is not None:
        handles.append(Line2D([], [], color="black", ls=":", lw=0.9, label="ownership threshold"))
    handles.append(Line2D([], [], color="gray", ls="-.", lw=0.8, label="chance"))
    for scheme in bounds[0] if bounds else ():
        color = scheme_style(scheme)[0]
        handles.append(Line2D([], [], color=color, marker="*", ms=8, mec="black", mew=0.5,
                              ls="none", label=f"{scheme} unattacked"))  # fmt: skip
        handles.append(Line2D([], [], color=color, ls="--", lw=0.8,
                              label=f"{scheme}: −{bounds[1]:g} points"))  # fmt: skip
    if banded:
        handles.append(
            Patch(color="gray", alpha=0.3, label=f"± 1 std over {seeds or len(runs)} seeds")
        )
    return handles


def curve_figure(panels: Sequence[tuple[str, Sequence[dict], Kind]], width: str = "double"):
    """The figure of :func:`curves` and :func:`by_dataset`, not yet saved (tests measure it).

    Args:
      panels: ``(panel title, runs, kind)`` per panel: ``runs`` are one ``attacks.json`` dict per
        seed, ``kind`` a :func:`jaxwm.runner.plot_layout.kind_of` result.
      width: ``"double"`` or ``"single"``.

    Returns:
      A matplotlib Figure with the fonts of :data:`jaxwm.runner.plot_layout.RC`.

    Example:
      >>> fig = curve_figure([("FTAL", [results], kind_of("ftal"))], "single")
    """
    ncols = (len(panels) if len(panels) <= 4 else 3) if width == "double" else min(len(panels), 2)
    nrows = -(-len(panels) // ncols)
    w = WIDTHS[width]
    all_runs = [res for _, runs, _ in panels for res in runs]
    legend_rows = -(-(2 * len(schemes(all_runs)) + 3) // (4 if width == "double" else 2))
    # Panels about as tall as wide (1.4-2.4 in: one panel across a page stays low), plus the
    # legend's rows and the x label.
    height = nrows * min(max(0.8 * w / ncols, 1.4), 2.4) + 0.16 * legend_rows + 0.45
    with style() as plt:
        fig, axes = plt.subplots(nrows, ncols, figsize=(w, height),
                                 squeeze=False, sharey=True, layout="constrained")  # fmt: skip
        for ax in axes.flat[len(panels) :]:
            ax.set_visible(False)
        shared_axis = len({kind.axis for _, _, kind in panels}) == 1
        banded = False
        for ax, (name, runs, kind) in zip(axes.flat, panels, strict=False):
            xs: list[float] = []
            for scheme in schemes(runs):
                s = series(runs, kind.name, scheme)
                if not len(s.x):
                    continue
                xs += list(s.x)
                color, marker = scheme_style(scheme)
                ax.plot(s.x, s.ret, "-", marker=marker, color=color)
                ax.plot(s.x, s.acc, "--", marker=marker, mfc="none", color=color)
                banded |= _band(ax, s.x, s.ret, s.ret_std, color)
                banded |= _band(ax, s.x, s.acc, s.acc_std, color)
            _reference_lines(ax, runs)
            strength_axis(ax, kind, xs)
            ax.set_title(name)
            if not shared_axis:
                ax.set_xlabel(kind.axis)
            ax.set_ylim(-2, 102)
            ax.set_yticks([0, 25, 50, 75, 100])
            ax.grid(alpha=0.3)
        if shared_axis:
            fig.supxlabel(panels[0][2].axis, fontsize=8)
        fig.supylabel("retention / accuracy (%)", fontsize=8)
        counts = sorted({len(runs) for _, runs, _ in panels})
        seeds = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        handles = _legend_handles(all_runs, banded, curves=True, seeds=seeds)
        # Above the panels: the shared x label takes the space below them.
        fig.legend(handles=handles, loc="outside upper center", frameon=False,
                   ncol=4 if width == "double" else 2)  # fmt: skip
    return fig


def _unit(runs: Sequence[dict[str, Any]], attack: str) -> str:
    return next((r["unit"] for res in runs for r in res["records"] if r["attack"] == attack), "")


def curves(
    results: Results, attacks: Sequence[str], out_dir: Path, stem: str, width: str = "double"
) -> list[Path]:
    """Retention (solid) and clean accuracy (dashed) against strength, one panel per attack.

    Args:
      results: An ``attacks.json`` dict, or one per seed (curves are then means with ± std bands).
      attacks: Attack kinds to draw, in panel order; those without records are skipped.
      out_dir: Output folder.
      stem: File name stem (``fig2_finetune``).
      width: ``"double"`` (7 in) or ``"single"`` (3.4 in).

    Returns:
      The PDF and PNG written, or [] when none of ``attacks`` has records.

    Example:
      >>> curves(json.load(open("attacks.json")), ["ftll", "ftal"], Path("."), "ft")
    """
    runs = _runs(results)
    kinds = [kind_of(a, _unit(runs, a)) for a in attacks if _unit(runs, a)]
    if not kinds:
        return []
    # One column is narrow: long titles there give way to the legend name (FTLL).
    panels = [(k.short if width == "single" and len(k.title) > 24 else k.title, runs, k)
              for k in kinds]  # fmt: skip
    title = f"{stem}: {runs[0].get('dataset', '')}, {runs[0].get('model', '')}"
    return save(curve_figure(panels, width), out_dir, stem, width, title)


def by_dataset(
    studies: dict[str, Results], attack: str, out_dir: Path, stem: str, width: str = "double"
) -> list[Path]:
    """One attack on several datasets, one panel each: the paper's Figure 2 layout.

    Args:
      studies: Dataset label -> its ``attacks.json`` dict(s), one per seed.
      attack: The attack kind drawn (``ftal`` for Figure 2, ``prune`` for Figure 3).
      out_dir: Output folder.
      stem: File name stem (``fig2_datasets``).
      width: ``"double"`` or ``"single"``.

    Returns:
      The PDF and PNG written, or [] when no dataset has records of ``attack``.

    Example:
      >>> by_dataset({"mnist": [m0, m1], "cifar10": [c0, c1]}, "ftal", Path("."), "fig2")
    """
    panels = []
    for label, results in studies.items():
        runs = _runs(results)
        if _unit(runs, attack):
            panels.append((label, runs, kind_of(attack, _unit(runs, attack))))
    if not panels:
        return []
    kind = panels[0][2]
    title = f"{stem}: {kind.title} by dataset"
    return save(curve_figure(panels, width), out_dir, stem, width, title)


def scatter(results: Results, out_dir: Path, width: str = "double") -> list[Path]:
    """Retention against clean accuracy of every attacked model, one panel per attack family.

    Args:
      results: An ``attacks.json`` dict, or one per seed (points are then means, with ± std
        error bars).
      out_dir: Output folder.
      width: ``"double"`` (panels side by side) or ``"single"`` (panels stacked).

    Returns:
      The PDF and PNG written, or [] when there are no records.

    Example:
      >>> scatter(json.load(open("attacks.json")), Path("."), "single")
    """
    runs = _runs(results)
    fig = scatter_figure(runs, width)
    if fig is None:
        return []
    return save(fig, out_dir, SCATTER, width, f"{SCATTER}: {runs[0].get('dataset', '')}")


def scatter_figure(runs: Sequence[dict[str, Any]], width: str = "double"):
    """The figure of :func:`scatter`, not yet saved; None when there are no records.

    Args:
      runs: One ``attacks.json`` dict per seed.
      width: ``"double"`` or ``"single"``.

    Returns:
      A matplotlib Figure, or None.

    Example:
      >>> fig = scatter_figure([results], "single")
    """
    seen = list(dict.fromkeys(r["attack"] for res in runs for r in res["records"]))
    if not seen:
        return []
    groups: dict[str, list[str]] = {}
    for g, _, _ in FIGURES:
        groups[g] = [a for a in attack_registry.in_group(g) if a in seen]
    for a in seen:  # kinds this version does not know
        if a not in attack_registry.REGISTRY:
            groups["other"].append(a)
    groups = {g: a for g, a in groups.items() if a}
    n, w = len(groups), WIDTHS[width]
    shape, size = ((1, n), (w, 0.55 * w + 0.8)) if width == "double" else ((n, 1), (w, n * 0.8 * w))
    drop = 100 * (mean_of(runs, "max_acc_drop") or 0.05)
    refs = {s: [res["reference"][s] for res in runs if s in res.get("reference", {})]
            for s in schemes(runs)}  # fmt: skip
    with style() as plt:
        fig, axes = plt.subplots(*shape, figsize=size, squeeze=False, sharey=True,
                                 layout="constrained")  # fmt: skip
        # tab10 without blue and orange (the schemes' colours) and gray (chance).
        palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i not in (0, 1, 7)]
        for ax, (group, attacks) in zip(axes.flat, groups.items(), strict=True):
            accs: list[float] = []
            for i, attack in enumerate(attacks):
                color = palette[i % len(palette)]
                for j, scheme in enumerate(schemes(runs)):
                    s = series(runs, attack, scheme)
                    if not len(s.x):
                        continue
                    accs += list(s.acc)
                    label = kind_of(attack).short if j == 0 else None
                    ax.plot(s.acc, s.ret, ls="-" if j == 0 else "--", lw=0.7, color=color,
                            marker=scheme_style(scheme)[1], ms=3, label=label)  # fmt: skip
                    if np.isfinite(s.ret_std).any():
                        ax.errorbar(s.acc, s.ret, xerr=s.acc_std, yerr=s.ret_std, fmt="none",
                                    ecolor=color, elinewidth=0.5, alpha=0.5)  # fmt: skip
            for scheme, rs in refs.items():
                if not rs:
                    continue
                color = scheme_style(scheme)[0]
                acc0 = 100 * float(np.mean([r["clean_accuracy"] for r in rs]))
                ret0 = 100 * float(np.mean([r["retention"] for r in rs]))
                ax.plot([acc0], [ret0], marker="*", ms=9, color=color, mec="black", mew=0.5,
                        ls="none", zorder=5)  # fmt: skip
                ax.axvline(acc0 - drop, color=color, ls="--", lw=0.8)
                accs += [acc0, acc0 - drop]
            _reference_lines(ax, runs)
            lo, hi = min(accs), max(accs)
            pad = max(2.0, 0.05 * (hi - lo))  # zoom on the models drawn, not on 0..100
            xlim = (max(lo - pad, -2), min(hi + pad, 102))
            ax.set_xlim(*xlim)
            ax.set_xticks([t for t in ax.get_xticks() if xlim[0] <= t <= min(xlim[1], 100)])
            ax.set_xlim(*xlim)  # set_xticks widens the view to its ticks; keep the zoom
            ax.set_ylim(-2, 102)
            ax.set_yticks([0, 25, 50, 75, 100])
            ax.set_title(GROUP_NAMES.get(group, group))
            ax.set_xlabel("clean accuracy (%)")
            ax.grid(alpha=0.3)
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22 if width == "double" else -0.3),
                      ncol=1 if width == "double" else 2, frameon=False, handlelength=1.5)  # fmt: skip
        fig.supylabel("watermark retention (%)", fontsize=8)
        handles = _legend_handles(runs, False, curves=False, bounds=(list(refs), drop))
        fig.legend(handles=handles, loc="outside lower center", frameon=False,
                   ncol=4 if width == "double" else 2)  # fmt: skip
    return fig


def plot_all(
    results: Results, out_dir: str | Path, widths: Sequence[str] = tuple(WIDTHS)
) -> list[Path]:
    """Draws every figure that the records support into ``out_dir``, in every width and format.

    Args:
      results: The ``attacks.json`` dict written by :func:`jaxwm.runner.attack_runs.run_attack`,
        or a list of them, one per seed (mode ``reproduce``): curves become means ± std.
      out_dir: Folder for the figures (created if needed).
      widths: Keys of :data:`jaxwm.runner.plot_layout.WIDTHS` to draw.

    Returns:
      Paths of the PDFs and PNGs written.

    Example:
      >>> plot_all([json.load(open(f"seed{s}/attack/attacks.json")) for s in (0, 1)], "figs")
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    for width in widths:
        for group, stem, _ in FIGURES:
            made += curves(results, attack_registry.in_group(group), out, stem, width)
        made += scatter(results, out, width)
    return made


def plot_studies(
    studies: dict[str, Results], out_dir: str | Path, widths: Sequence[str] = tuple(WIDTHS)
) -> dict[str, list[Path]]:
    """Every figure of mode ``reproduce``: per dataset pooled over seeds, then across datasets.

    Args:
      studies: Dataset label -> its seeds' ``attacks.json`` dicts.
      out_dir: Folder; each dataset's figures go to ``out_dir/<label>/``, the
        :data:`DATASET_FIGURES` (FTAL and activation-frequency pruning, one panel per dataset)
        to ``out_dir`` itself.
      widths: Keys of :data:`jaxwm.runner.plot_layout.WIDTHS` to draw.

    Returns:
      Label (``""`` for the cross-dataset figures) -> paths written.

    Example:
      >>> plot_studies({"mnist": [seed0, seed1]}, "runs/reproduce")
    """
    out = Path(out_dir)
    made = {label: plot_all(runs, out / label, widths) for label, runs in studies.items() if runs}
    made[""] = [p for attack, stem in DATASET_FIGURES for width in widths
                for p in by_dataset(studies, attack, out, stem, width)]  # fmt: skip
    return made


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Command line: re-plot one ``attacks.json``, or several seeds' pooled.

    Args:
      argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
      Paths of the files written.
    """
    parser = argparse.ArgumentParser(
        prog="python -m jaxwm.runner.plots", description=__doc__.split("\n")[0]
    )
    parser.add_argument("attacks_json", type=Path, nargs="+",
                        help="attacks.json written by mode=attack (several: one per seed)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: beside it)")
    parser.add_argument("--widths", nargs="+", choices=tuple(WIDTHS), default=tuple(WIDTHS),
                        help="figure widths: double (7 in) and/or single (3.4 in) column")  # fmt: skip
    args = parser.parse_args(argv)
    results = [json.loads(p.read_text()) for p in args.attacks_json]
    paths = plot_all(results, args.out or args.attacks_json[0].parent, args.widths)
    for p in paths:
        print(p)
    return paths


if __name__ == "__main__":
    main()
