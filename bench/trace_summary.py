"""Where a profiled step spends its time: the top operations of a jax.profiler trace; JSON.

Reads the ``*.trace.json.gz`` that ``jax.profiler.trace`` writes (``bench/train_throughput.py
--trace DIR`` records one) and sums the durations of its complete events by name, per device
or host thread group: on a GPU the kernels (convolutions, fusions, copies) of the device
streams, on CPU the XLA thunks. One JSON line per process group with the ``--top`` names, their
total milliseconds, call counts and share of that group's summed time. Host events nest
(a Python call contains the XLA execution it waits for), so there the times are inclusive;
device kernels do not nest. A trace is many megabytes; this summary is what comes back from a
device session.

Command (from the repository root)::

    python bench/trace_summary.py /tmp/trace --top 15
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import sys
from pathlib import Path


def summarize(trace_file: Path, top: int = 15) -> list[dict]:
    """Per process group of the trace: the ``top`` event names by total duration.

    Args:
      trace_file: A Chrome-format ``.trace.json.gz`` (or ``.json``) from ``jax.profiler``.
      top: How many names to keep per group.

    Returns:
      One dict per group: ``group``, ``busy_ms`` and ``top`` (name, ms, calls, share).
    """
    opener = gzip.open if trace_file.suffix == ".gz" else open
    with opener(trace_file, "rt") as f:
        events = json.load(f).get("traceEvents", [])
    names = {e["pid"]: e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}  # fmt: skip
    dur: dict = collections.defaultdict(collections.Counter)
    calls: dict = collections.defaultdict(collections.Counter)
    for e in events:
        if e.get("ph") == "X" and "dur" in e:
            group = names.get(e.get("pid"), str(e.get("pid")))
            dur[group][e.get("name", "?")] += e["dur"]
            calls[group][e.get("name", "?")] += 1
    out = []
    for group, per_name in dur.items():
        busy = sum(per_name.values())
        rows = [
            {"name": n[:120], "ms": round(us / 1e3, 3), "calls": calls[group][n],
             "share": round(us / busy, 4)}
            for n, us in per_name.most_common(top)
        ]  # fmt: skip
        out.append({"group": group, "busy_ms": round(busy / 1e3, 3), "top": rows})
    return sorted(out, key=lambda g: -g["busy_ms"])


def main(argv: list[str] | None = None) -> list[dict]:
    """Summarises every trace under a directory (or one file) and prints JSON lines.

    Example:
      >>> main(["/tmp/trace", "--top", "10"])
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path", help="a trace file or a directory searched for *.trace.json.gz")
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args(argv)
    path = Path(args.path)
    files = [path] if path.is_file() else sorted(path.rglob("*.trace.json.gz"))
    if not files:
        sys.exit(f"error: no *.trace.json.gz under {path}; record one with --trace DIR")
    rows = []
    for file in files:
        for group in summarize(file, args.top):
            row = {"trace": str(file), **group}
            print(json.dumps(row))
            rows.append(row)
    return rows


if __name__ == "__main__":
    main()
