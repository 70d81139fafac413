"""Sizes, fonts, axes and files of the figures of :mod:`jaxwm.runner.plots`.

Every figure is drawn at a journal's two column widths, with the same 7-8 pt text in both so it
reads at print size, and saved as a vector PDF (for the paper) and a 300 dpi PNG (for a quick
look); the legend sits outside the axes and the files are cropped to everything drawn
(``bbox_inches="tight"``), so nothing is clipped. Seeds are pooled here: each curve is the mean
over the runs given, with its sample standard deviation as a band when there are two or more.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxwm.engine.sweep import aggregate
from jaxwm.runner import attack_registry

# Figure widths in inches: one column and the full page of a two-column journal (IEEE, ACM, LNCS
# are 3.3-3.5 and 6.9-7.2). The double width keeps the historical file names.
WIDTHS = {"double": 7.0, "single": 3.4}
SUFFIX = {"double": "", "single": "_single"}
FORMATS = ("pdf", "png")
PNG_DPI = 300
RC = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "figure.titlesize": 8,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "axes.linewidth": 0.6,
    "grid.linewidth": 0.4,
}
SCHEME_STYLE = {"partitioned": ("tab:blue", "o"), "baseline": ("tab:orange", "^")}


def pyplot():
    """matplotlib's pyplot on the Agg backend, imported on first use: importing the plotting
    modules (as every mode does through :mod:`jaxwm.runner.attack_runs`) loads no matplotlib."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, safe in threads and on servers
    import matplotlib.pyplot as plt

    return plt


@contextlib.contextmanager
def style() -> Iterator[Any]:
    """pyplot with the figure fonts set, for the duration of one figure."""
    plt = pyplot()
    with plt.rc_context(RC):
        yield plt


def scheme_style(scheme: str) -> tuple[str, str]:
    """(colour, marker) of a watermarking scheme."""
    return SCHEME_STYLE.get(scheme, ("tab:gray", "s"))


class Kind(NamedTuple):
    """What a figure needs to know about an attack kind."""

    name: str
    title: str
    axis: str
    xscale: str
    larger_is_stronger: bool
    short: str
    group: str


def kind_of(attack: str, unit: str = "") -> Kind:
    """The plot declarations of ``attack`` from the registry; plain defaults for a kind this
    version does not know (an ``attacks.json`` written by another version)."""
    k = attack_registry.REGISTRY.get(attack)
    if k is None:
        return Kind(attack, attack, f"strength ({unit})" if unit else "strength", "linear",
                    True, attack, "other")  # fmt: skip
    return Kind(k.name, k.title, k.axis or f"strength ({k.unit})", k.xscale,
                k.larger_is_stronger, k.short or k.name, k.group)  # fmt: skip


class Series(NamedTuple):
    """One attack on one scheme, pooled over seeds, by increasing strength (values in %)."""

    x: np.ndarray
    ret: np.ndarray
    ret_std: np.ndarray  # NaN where fewer than two seeds have that strength
    acc: np.ndarray
    acc_std: np.ndarray
    n: np.ndarray  # seeds per strength


def series(runs: Sequence[dict[str, Any]], attack: str, scheme: str) -> Series:
    """Mean and sample std over ``runs`` (one ``attacks.json`` dict per seed) per strength."""
    by: dict[float, list[dict]] = {}
    for res in runs:
        for r in res["records"]:
            if r["attack"] == attack and r["scheme"] == scheme:
                by.setdefault(float(r["strength"]), []).append(r)
    xs = sorted(by)
    ret = [aggregate([100 * r["retention"] for r in by[x]]) for x in xs]
    acc = [aggregate([100 * r["clean_accuracy"] for r in by[x]]) for x in xs]
    col = lambda stats, k: np.array([s[k] for s in stats], float)  # noqa: E731
    return Series(np.array(xs, float), col(ret, "mean"), col(ret, "std"), col(acc, "mean"),
                  col(acc, "std"), col(ret, "n"))  # fmt: skip


def schemes(runs: Sequence[dict[str, Any]]) -> list[str]:
    """The schemes in the records, in first-seen order."""
    return list(dict.fromkeys(r["scheme"] for res in runs for r in res["records"]))


def mean_of(runs: Sequence[dict[str, Any]], key: str) -> float | None:
    """Mean of a top-level number over runs (e.g. the decision threshold); None if absent."""
    vals = [res[key] for res in runs if res.get(key) is not None and np.isfinite(res[key])]
    return float(np.mean(vals)) if vals else None


def strength_axis(ax, kind: Kind, strengths: Sequence[float]) -> None:
    """Scale, ticks and direction of a strength axis, from the kind's declarations.

    ``log2`` spaces 0, 1, 2, 4 ... evenly (symmetric log, linear below 1 so 0 is drawn);
    ``discrete`` puts a tick at each strength run and nowhere else (no 7.5 bits); the axis is
    reversed when a smaller strength is stronger, so the attack grows to the right everywhere.
    """
    from matplotlib import ticker  # pyplot() has selected the backend by now

    xs = sorted(set(float(s) for s in strengths))
    ticks = None
    if kind.xscale == "log2":
        ax.set_xscale("symlog", base=2, linthresh=1, linscale=1)
        ticks = xs
        if len(xs) > 7:  # a dense sweep: label the powers of two only
            hi = max(xs)
            ticks = [x for x in xs if x == 0] + [
                2.0**k for k in range(int(math.log2(max(hi, 1))) + 1)
            ]
    elif kind.xscale == "discrete":
        ticks = xs[:: max(1, math.ceil(len(xs) / 8))]
    else:
        ax.xaxis.set_major_locator(ticker.MaxNLocator(5, steps=[1, 2, 2.5, 5, 10]))
    if ticks is not None:
        ax.set_xticks(ticks)
        ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    if kind.xscale == "discrete" and len(xs) > 1:  # room beside the first and last markers
        span = xs[-1] - xs[0]
        ax.set_xlim(xs[0] - 0.08 * span, xs[-1] + 0.08 * span)
    elif kind.xscale == "log2" and xs:  # symlog's own limits leave a wide gap left of 0
        ax.set_xlim(xs[0] - 0.25 if xs[0] <= 0 else xs[0] / 1.15, max(xs[-1] * 1.15, 1))
    if not kind.larger_is_stronger:
        ax.invert_xaxis()


def save(fig, out_dir: Path, stem: str, width: str, title: str) -> list[Path]:
    """Writes ``<stem><suffix>.pdf`` and ``.png`` cropped to all artists; closes the figure.

    Args:
      fig: The figure.
      out_dir: Folder.
      stem: File name without suffix or extension.
      width: A key of :data:`WIDTHS`.
      title: The PDF's Title metadata (figures carry no title of their own: the caption does).

    Returns:
      The two paths.
    """
    paths = []
    with style() as plt:  # savefig reads some settings at save time
        for fmt in FORMATS:
            path = out_dir / f"{stem}{SUFFIX[width]}.{fmt}"
            meta = {"Title": title} if fmt == "pdf" else {"Title": title, "Software": "jaxwm"}
            fig.savefig(path, dpi=PNG_DPI, bbox_inches="tight", pad_inches=0.02, metadata=meta)
            paths.append(path)
        plt.close(fig)
    return paths
