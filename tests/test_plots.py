"""Paper figures of mode attack/reproduce, from hand-built records (no training)."""

import struct

import numpy as np
import pytest

from jaxwm.runner import attack_registry, plot_layout, plots

STRENGTHS = {"ftll": (0, 1, 2, 4, 8, 16, 32), "ftal": (0, 1, 2, 4, 8, 16, 32),
             "rtll": (0, 4), "rtal": (0, 4), "prune": (0.0, 0.5), "quantize": (8, 6, 4),
             "noise": (0.0, 0.3)}  # fmt: skip


def results(seed: int = 0, strengths=STRENGTHS) -> dict:
    """An attacks.json as mode attack writes it: retention falls with strength, seed-dependent."""
    rng = np.random.default_rng(seed)
    records = []
    for attack, xs in strengths.items():
        kind = attack_registry.get(attack)
        for scheme in ("partitioned", "baseline"):
            for i, x in enumerate(xs):
                ret = float(np.clip(1 - 0.1 * i + 0.05 * rng.standard_normal(), 0, 1))
                records.append({"attack": attack, "scheme": scheme, "unit": kind.unit,
                                "strength": x, "retention": ret,
                                "clean_accuracy": 0.9 - 0.02 * i})  # fmt: skip
    reference = {s: {"clean_accuracy": 0.9, "retention": 1.0} for s in ("partitioned", "baseline")}
    return {"records": records, "chance": 0.1, "decision_threshold": 0.3, "max_acc_drop": 0.05,
            "reference": reference, "dataset": "synthetic", "model": "ResNet(...)"}  # fmt: skip


def png_width_in(path) -> float:
    """Width of a PNG in inches at the figures' dpi (from its IHDR chunk)."""
    width = struct.unpack(">I", path.read_bytes()[16:20])[0]
    return width / plot_layout.PNG_DPI


def panels(fig) -> list:
    return [ax for ax in fig.axes if ax.get_visible()]


def test_every_figure_is_written_as_pdf_and_png_in_both_widths(tmp_path):
    # One kind keeps it fast (each file is a full draw); the other groups have no records.
    made = plots.plot_all(results(strengths={"ftal": (0, 2, 4)}), tmp_path)
    stems = ("fig2_finetune", plots.SCATTER)
    want = {f"{s}{sfx}.{fmt}" for s in stems for sfx in ("", "_single") for fmt in ("pdf", "png")}
    assert {p.name for p in made} == want and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        want
    )
    for stem in stems:
        assert (tmp_path / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
        # bbox_inches="tight" crops to the drawing: the width is near the column's, never over.
        for sfx, width in (("", 7.0), ("_single", 3.4)):
            w = png_width_in(tmp_path / f"{stem}{sfx}.png")
            assert width - 0.4 < w <= width + 0.05, (stem, sfx, w)


@pytest.mark.parametrize("width", ["double", "single"])
def test_legends_lie_inside_the_saved_image(width):
    figs = [plots.curve_figure([(k.title, [results()], k) for k in map(plot_layout.kind_of, names)],
                               width)
            for names in (("ftll", "ftal", "rtll", "rtal"), ("quantize", "noise"))]  # fmt: skip
    figs.append(plots.scatter_figure([results()], width))
    for fig in figs:
        renderer = fig.canvas.get_renderer()
        fig.canvas.draw()
        legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        assert legends
        # The whole canvas, before bbox_inches="tight" crops it: a legend wider than the figure
        # (the old 6-column one) or pushed past its edge sticks out of this box.
        canvas = fig.bbox
        for legend in legends:
            box = legend.get_window_extent(renderer)
            assert canvas.x0 - 1 <= box.x0 and box.x1 <= canvas.x1 + 1, (width, box, canvas)
            assert canvas.y0 - 1 <= box.y0 and box.y1 <= canvas.y1 + 1, (width, box, canvas)
            for ax in panels(fig):  # outside every panel: it hides no data
                assert not box.overlaps(ax.get_window_extent(renderer)), ax.get_title()
        plot_layout.pyplot().close(fig)


def test_axes_come_from_the_registry():
    kinds = [plot_layout.kind_of(n) for n in attack_registry.in_group("finetune")]
    assert [k.name for k in kinds][:4] == ["ftll", "ftal", "rtll", "rtal"]
    quant = plot_layout.kind_of("quantize")
    fig = plots.curve_figure([(k.title, [results()], k) for k in (*kinds[:2], quant)])
    fig.canvas.draw()
    ftll, ftal, q = panels(fig)
    assert ftll.get_xlabel() == "fine-tuning epochs" and q.get_xlabel() == "weight precision (bits)"
    assert ftal.get_xscale() == "symlog"  # 0..32 epochs: powers of two evenly spaced
    assert [t.get_text() for t in ftal.get_xticklabels()] == ["0", "1", "2", "4", "8", "16", "32"]
    # Ticks at exactly the bits run (no 7.5 or 6.5), fewer bits (stronger) to the right.
    assert sorted(int(t.get_text()) for t in q.get_xticklabels()) == [4, 6, 8]
    assert q.get_xlim()[0] > q.get_xlim()[1]
    assert ftll.get_title().startswith("FTLL") and "(" not in fig.get_suptitle()
    assert fig.get_supylabel() == "retention / accuracy (%)"
    plot_layout.pyplot().close(fig)


def test_unknown_kind_falls_back_to_its_unit():
    kind = plot_layout.kind_of("sharpen", "sigma")
    assert (kind.axis, kind.xscale, kind.title) == ("strength (sigma)", "linear", "sharpen")


def bands(fig) -> int:
    return sum(len(ax.collections) for ax in panels(fig))


def test_several_seeds_draw_mean_and_std_band():
    ftal = plot_layout.kind_of("ftal")
    one = plots.curve_figure([("FTAL", [results(0)], ftal)])
    two = plots.curve_figure([("FTAL", [results(0), results(1)], ftal)])
    assert bands(one) == 0 and bands(two) == 4  # retention and accuracy, both schemes
    s = plot_layout.series([results(0), results(1)], "ftal", "baseline")
    rets = [[100 * r["retention"] for r in res["records"]
             if (r["attack"], r["scheme"]) == ("ftal", "baseline")] for res in (results(0), results(1))]  # fmt: skip
    assert np.allclose(s.ret, np.mean(rets, axis=0)) and np.allclose(
        s.ret_std, np.std(rets, axis=0, ddof=1)
    )
    assert set(s.n) == {2}
    labels = [t.get_text() for t in two.legends[0].get_texts()]
    assert "± 1 std over 2 seeds" in labels and not any("std" in t for t in
                                                         [t.get_text() for t in one.legends[0].get_texts()])  # fmt: skip
    for fig in (one, two):
        plot_layout.pyplot().close(fig)


def test_reproduce_figures_pool_seeds_and_lay_datasets_out_as_the_paper(tmp_path):
    few = {"ftal": (0, 2)}
    made = plots.plot_studies({"mnist": [results(0, few), results(1, few)], "cifar100": []},
                              tmp_path, widths=("single",))  # fmt: skip
    assert {p.name for p in made["mnist"]} == {f"{s}_single.{f}" for s in ("fig2_finetune", plots.SCATTER)
                                               for f in ("pdf", "png")}  # fmt: skip
    assert all(p.parent == tmp_path / "mnist" for p in made["mnist"]) and "cifar100" not in made
    assert {p.name for p in made[""]} == {"fig2_datasets_single.pdf", "fig2_datasets_single.png"}
    ftal = plot_layout.kind_of("ftal")
    studies = {"mnist": [results(0, few), results(1, few)], "cifar10": [results(2, few)]}
    fig = plots.curve_figure([(k, runs, ftal) for k, runs in studies.items()])
    assert [ax.get_title() for ax in panels(fig)] == ["mnist", "cifar10"]  # the paper's Figure 2
    assert bands(fig) == 4  # only mnist has two seeds
    plot_layout.pyplot().close(fig)
