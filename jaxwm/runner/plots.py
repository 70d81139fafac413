"""Plots of an attack sweep (``attacks.json`` of mode ``attack``) with numpy and matplotlib.

* ``fig2_finetune.png`` -- the paper's Figure 2 analogue: watermark retention and clean accuracy
  against fine-tuning strength (epochs), one panel per fine-tuning attack, both schemes;
* ``fig3_pruning.png`` -- Figure 3 analogue: the same against the pruning ratio (activation
  frequency first, then fine-pruning and magnitude pruning when present);
* ``attacks_other.png`` -- quantization, weight noise, distillation and overwriting;
* ``attacks_scatter.png`` -- retention against clean accuracy for every attacked model, with
  the decision threshold, chance, and each scheme's 5-point accuracy bound: points below the
  threshold and right of the bound are Watermark-Robustness-Toolbox successes.

Each attack's figure, panel position and title are declared by its entry in
:mod:`jaxwm.runner.attack_registry`.

Re-plot a finished run: ``python -m jaxwm.runner.plots runs/demo_attack/attacks.json [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxwm.runner import attack_registry

SCHEME_STYLE = {"partitioned": ("tab:blue", "o"), "baseline": ("tab:orange", "^")}
# (group of jaxwm.runner.attack_registry, file, figure title): an attack's entry names its group.
FIGURES = (
    ("finetune", "fig2_finetune.png", "Figure 2 analogue: fine-tuning"),
    ("pruning", "fig3_pruning.png", "Figure 3 analogue: pruning"),
    ("other", "attacks_other.png", "Other removal attacks"),
)


def _pyplot():
    """matplotlib's pyplot on the Agg backend, imported on first use: importing this module (as
    every mode does through :mod:`jaxwm.runner.attack_runs`) does not load matplotlib."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, safe in threads and on servers
    import matplotlib.pyplot as plt

    return plt


def _style(scheme: str) -> tuple[str, str]:
    return SCHEME_STYLE.get(scheme, ("tab:gray", "s"))


def _series(records: Sequence[dict], attack: str, scheme: str) -> tuple[np.ndarray, ...]:
    """Strength, retention % and clean accuracy % of one attack on one scheme, by strength."""
    rs = sorted(
        (r for r in records if r["attack"] == attack and r["scheme"] == scheme),
        key=lambda r: r["strength"],
    )
    x = np.array([r["strength"] for r in rs], float)
    ret = np.array([100 * r["retention"] for r in rs], float)
    acc = np.array([100 * r["clean_accuracy"] for r in rs], float)
    return x, ret, acc


def _schemes(records: Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(r["scheme"] for r in records))


def _reference_lines(ax, results: dict[str, Any]) -> None:
    thr = results.get("decision_threshold")
    if thr is not None and np.isfinite(thr):
        ax.axhline(
            100 * thr, color="black", ls=":", lw=1.2, label="retention needed (binomial, nulls)"
        )
    ax.axhline(100 * results["chance"], color="gray", ls="-.", lw=1, label="chance")


def curves(results: dict[str, Any], attacks: Sequence[str], path: Path, title: str) -> Path | None:
    """Retention (solid) and clean accuracy (dashed) against strength, one panel per attack.

    Args:
      results: The ``attacks.json`` dict (``records``, ``chance``, ``decision_threshold``...).
      attacks: Attack kinds to draw, in panel order; those without records are skipped.
      path: Output PNG.
      title: Figure title.

    Returns:
      ``path``, or None when none of ``attacks`` has records.
    """
    records = results["records"]
    panels = [a for a in attacks if any(r["attack"] == a for r in records)]
    if not panels:
        return None
    ncols = 2 if len(panels) == 4 else min(len(panels), 3)
    nrows = -(-len(panels) // ncols)
    plt = _pyplot()
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.3 * ncols, 3.4 * nrows + 0.8), squeeze=False, sharey=True
    )
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, attack in zip(axes.flat, panels, strict=False):
        for scheme in _schemes(records):
            x, ret, acc = _series(records, attack, scheme)
            if not len(x):
                continue
            color, marker = _style(scheme)
            ax.plot(x, ret, "-", marker=marker, color=color, label=f"{scheme}: retention")
            ax.plot(x, acc, "--", marker=marker, mfc="none", color=color,
                    label=f"{scheme}: clean accuracy")  # fmt: skip
        _reference_lines(ax, results)
        unit = next(r["unit"] for r in records if r["attack"] == attack)
        ax.set_xlabel(f"strength ({unit})")
        kind = attack_registry.REGISTRY.get(attack)  # None: a kind this version does not know
        if kind is not None and not kind.larger_is_stronger:
            ax.invert_xaxis()  # fewer bits = stronger: strength grows to the right everywhere
        ax.set_title(kind.title if kind is not None else attack, fontsize=10)
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("%")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8)
    fig.suptitle(f"{title} — {results.get('dataset', '')}, {results.get('model', '')}", fontsize=10)
    fig.tight_layout(rect=(0, 0.6 / fig.get_figheight(), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def scatter(results: dict[str, Any], path: Path) -> Path | None:
    """Retention against clean accuracy for every attacked model (both schemes).

    Args:
      results: The ``attacks.json`` dict.
      path: Output PNG.

    Returns:
      ``path``, or None when there are no records.
    """
    records = results["records"]
    if not records:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    kinds = list(dict.fromkeys(r["attack"] for r in records))
    palette = plt.get_cmap("tab10").colors + ("black", "gold")  # 12 distinct hues
    for i, attack in enumerate(kinds):
        for scheme in _schemes(records):
            _, ret, acc = _series(records, attack, scheme)
            if len(acc):
                ax.scatter(acc, ret, color=palette[i % len(palette)], marker=_style(scheme)[1], s=28, alpha=0.85,
                           edgecolors="none", label=attack if scheme == _schemes(records)[0] else None)  # fmt: skip
    for scheme in _schemes(records):  # marker key: the colours above are attacks
        ax.scatter([], [], color="gray", marker=_style(scheme)[1], label=f"({scheme})")
    drop = 100 * results.get("max_acc_drop", 0.05)
    for scheme, ref in results.get("reference", {}).items():
        color = _style(scheme)[0]
        acc0, ret0 = 100 * ref["clean_accuracy"], 100 * ref["retention"]
        ax.scatter([acc0], [ret0], marker="*", s=220, color=color, edgecolors="black",
                   label=f"{scheme} unattacked", zorder=5)  # fmt: skip
        ax.axvline(acc0 - drop, color=color, ls="--", lw=1, label=f"{scheme} -{drop:g} points")
    _reference_lines(ax, results)
    ax.set_xlabel("clean accuracy % (evaluation split)")
    ax.set_ylabel("watermark retention %")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.set_title(
        f"All attacks ({results.get('dataset', '')}): success = below the threshold and right of "
        f"the scheme's -{drop:g}-point line",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_all(results: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Draws every figure that the records support into ``out_dir``.

    Args:
      results: The ``attacks.json`` dict written by :func:`jaxwm.runner.attack_runs.run_attack`.
      out_dir: Folder for the PNGs (created if needed).

    Returns:
      Paths of the PNGs written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    made = [
        curves(results, attack_registry.in_group(group), out / name, title)
        for group, name, title in FIGURES
    ]
    made.append(scatter(results, out / "attacks_scatter.png"))
    return [p for p in made if p is not None]


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Command line: re-plot an ``attacks.json``.

    Args:
      argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
      Paths of the PNGs written.
    """
    parser = argparse.ArgumentParser(
        prog="python -m jaxwm.runner.plots", description=__doc__.split("\n")[0]
    )
    parser.add_argument("attacks_json", type=Path, help="attacks.json written by mode=attack")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: beside it)")
    args = parser.parse_args(argv)
    results = json.loads(args.attacks_json.read_text())
    paths = plot_all(results, args.out or args.attacks_json.parent)
    for p in paths:
        print(p)
    return paths


if __name__ == "__main__":
    main()
