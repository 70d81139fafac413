"""Benchmark helpers that turn raw measurements into the figures RESULTS.md records."""

import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import trace_summary  # noqa: E402


def test_trace_summary_sums_durations_per_device_and_name(tmp_path):
    events = [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
        {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/host:CPU"}},
        {"ph": "X", "pid": 1, "name": "conv_fwd", "dur": 300},
        {"ph": "X", "pid": 1, "name": "conv_fwd", "dur": 300},
        {"ph": "X", "pid": 1, "name": "fusion.12", "dur": 400},
        {"ph": "X", "pid": 2, "name": "dispatch", "dur": 50},
        {"ph": "i", "pid": 1, "name": "marker"},  # instant events have no duration
    ]
    path = tmp_path / "x.trace.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": events}, f)
    gpu, host = trace_summary.summarize(path, top=1)
    assert gpu["group"] == "/device:GPU:0" and gpu["busy_ms"] == 1.0
    assert gpu["top"] == [{"name": "conv_fwd", "ms": 0.6, "calls": 2, "share": 0.6}]
    assert host["group"] == "/host:CPU" and host["busy_ms"] == 0.05
