"""Compile profile of a whole run: wall time, XLA compilations and which functions they were.

Runs one config in this process (as ``launch.py`` would) and prints one JSON line: the wall
time, the number of XLA compilations and their seconds, and the functions that took the most
compile time. It depends only on ``jaxwm.runner.modes.run``, so it also profiles older commits. Compile time is a large share of short runs (half of
the CPU demo reproduction before compilations were shared), so this is the script that says
where it goes. ``--compile-cache DIR`` uses the persistent cache (run twice to see it warm);
the default disables it, so every compilation is counted at full cost.

Commands (from the repository root)::

    JAXWM_SECRET=k JAX_PLATFORMS=cpu python bench/compile_profile.py configs/demo_reproduce.py
    JAXWM_SECRET=k python bench/compile_profile.py configs/cifar10.py \\
        --set data.source=folder:.gpu/data/cifar10.tar.gz          # GPU
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from jaxwm.runner import modes  # noqa: E402

_COMPILE = "/jax/core/compile/backend_compile_duration"


def _load_config(path: str, overrides: list[str]):
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = mod.get_config()
    for item in overrides:
        dotted, _, text = item.partition("=")
        section, _, name = dotted.rpartition(".")
        target = cfg[section] if section else cfg
        old = target[name]
        target[name] = type(old)(text) if not isinstance(old, bool) else text == "True"
    return cfg


def main(argv: list[str] | None = None) -> dict:
    """Runs the config and prints one JSON line (also returned).

    Example:
      >>> main(["configs/demo.py", "--set", "train.epochs=1"])
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="a config file, e.g. configs/demo_reproduce.py")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="scalar overrides, e.g. train.epochs=2")  # fmt: skip
    p.add_argument("--compile-cache", default="", metavar="DIR")
    p.add_argument("--workdir", help="default: a temporary directory")
    p.add_argument("--top", type=int, default=10, help="functions listed")
    p.add_argument("--out", metavar="FILE.jsonl", help="also append the JSON line here")
    args = p.parse_args(argv)

    cfg = _load_config(args.config, args.set)
    cfg.progress = False
    cfg.compile_cache = args.compile_cache
    count: collections.Counter = collections.Counter()
    secs: collections.Counter = collections.Counter()

    def on_duration(event: str, duration: float, **kw: object) -> None:
        if event == _COMPILE:
            count[str(kw.get("fun_name"))] += 1
            secs[str(kw.get("fun_name"))] += duration

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    workdir = args.workdir or tempfile.mkdtemp(prefix="jaxwm_compile_")
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON line
        modes.run(cfg, workdir)
    wall = time.perf_counter() - t0
    jax.monitoring.unregister_event_duration_listener(on_duration)
    compile_s = sum(secs.values())
    top = sorted(secs, key=secs.get, reverse=True)[: args.top]
    dev = jax.devices()[0]
    row = {
        "what": "compile_profile",
        "config": args.config,
        "overrides": args.set,
        "wall_s": round(wall, 2),
        "compilations": sum(count.values()),
        "compile_s": round(compile_s, 2),
        "compile_share": round(compile_s / wall, 3),
        "top": [{"fun": f, "n": count[f], "s": round(secs[f], 3)} for f in top],
        "device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}",
        "jax": jax.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }
    line = json.dumps(row)
    print(line)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")
    return row


if __name__ == "__main__":
    main()
