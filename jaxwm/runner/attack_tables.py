"""Result tables of mode ``attack``: the CSV columns and the per-attack summary.

:func:`jaxwm.runner.attack_runs.run_attack` produces one record per (attack, scheme, strength) point;
this module turns those records into what ``attacks.csv`` and ``attacks.md`` show. For each
attack and scheme, :func:`summarize` finds the strongest strength at which the owner still
proves ownership, the weakest at which it is lost, and whether any point met the
Watermark-Robustness-Toolbox success criterion; :func:`summary_table` renders those rows as
Markdown. Strengths are ordered by :func:`stronger`, since fewer quantization bits is the stronger
attack (each kind's direction is declared in :mod:`jaxwm.runner.attack_registry`). No JAX
computation: the tables can be rebuilt from a saved ``attacks.json``.

Example:
    >>> recs = [{"attack": "prune", "scheme": "partitioned", "unit": "ratio", "strength": s,
    ...          "owned": s < 0.5, "success": s >= 0.5, "retention": 1 - s,
    ...          "clean_accuracy": 0.9} for s in (0.25, 0.5)]
    >>> row = summarize(recs)[0]
    >>> row["strongest_owned"], row["weakest_lost"], row["success_at"]
    (0.25, 0.5, 0.5)
    >>> summary_table([row]).splitlines()[2]
    '| prune | partitioned | ratio | 0.25 | 0.5 | 0.5 | 50.0 | 90.0 | yes | 0.5 |'
"""

from __future__ import annotations

from typing import Any

from jaxwm.runner import attack_registry

# Under every attack table: which images its accuracies are measured on.
EVAL_NOTE = (
    "Accuracy % is on the evaluation share of the test split (the attacker's share held out), "
    "not on the full test split that table1.md uses."
)

# Columns of attacks.csv: the fields of one point record, in order.
CSV_FIELDS = ("attack", "scheme", "strength", "unit", "clean_accuracy", "accuracy_drop",
              "retention", "k", "n", "p_value", "log10_p_value", "owned", "success",
              "attacker_retention", "retention_owner_head", "pruned_fraction")  # fmt: skip


def stronger(attack: str, strength: float) -> float:
    """Sort key that grows with attack strength (fewer quantization bits = stronger).

    Args:
      attack: Attack kind; one not in the registry (an older ``attacks.json``) counts as
        larger = stronger.
      strength: Its strength value.

    Returns:
      A number, larger for a stronger attack.
    """
    kind = attack_registry.REGISTRY.get(attack)
    return -strength if kind is not None and not kind.larger_is_stronger else strength


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per attack and scheme: the strongest strength still owned, and WRT success.

    Args:
      records: Point records as written to ``attacks.json``.

    Returns:
      One row per (attack, scheme) in first-seen order: ``strongest_owned`` (strongest owned
      strength, None if none), ``weakest_lost`` (weakest strength not owned), ``success`` (any
      point met the WRT criterion), ``success_at`` (weakest such strength), the strongest point's
      retention and accuracy.
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["attack"], r["scheme"]), []).append(r)
    rows = []
    for (attack, scheme), rs in groups.items():
        rs = sorted(rs, key=lambda r: stronger(attack, r["strength"]))
        owned = [r["strength"] for r in rs if r["owned"]]
        lost = [r["strength"] for r in rs if not r["owned"]]
        wins = [r["strength"] for r in rs if r["success"]]
        rows.append({
            "attack": attack, "scheme": scheme, "unit": rs[0]["unit"], "points": len(rs),
            "strongest_owned": owned[-1] if owned else None,
            "weakest_lost": lost[0] if lost else None,
            "success": bool(wins), "success_at": wins[0] if wins else None,
            "strongest": rs[-1]["strength"], "retention_at_strongest": rs[-1]["retention"],
            "accuracy_at_strongest": rs[-1]["clean_accuracy"],
        })  # fmt: skip
    return rows


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of :func:`summarize` rows, one number per cell.

    Accuracies here are on the evaluation share of the test split (the attacker's share held
    out, see ``split`` in ``attacks.json``), not the full test split of ``table1.md``; the note
    under the table says so.

    Args:
      rows: Rows from :func:`summarize`.

    Returns:
      The table, one line per (attack, scheme), and the note.
    """

    def fmt(x):
        return "—" if x is None else f"{x:g}"

    out = ["| attack | scheme | unit | strongest owned | weakest lost | strongest | "
           "retention % at strongest | accuracy % at strongest | WRT success | success from |",
           "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        out.append(
            f"| {r['attack']} | {r['scheme']} | {r['unit']} | {fmt(r['strongest_owned'])} | "
            f"{fmt(r['weakest_lost'])} | {fmt(r['strongest'])} | "
            f"{100 * r['retention_at_strongest']:.1f} | {100 * r['accuracy_at_strongest']:.1f} | "
            f"{'yes' if r['success'] else 'no'} | {fmt(r['success_at'])} |"
        )
    out += ["", EVAL_NOTE]
    return "\n".join(out) + "\n"
