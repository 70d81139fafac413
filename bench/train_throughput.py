"""jaxwm training throughput: images/s of the real jitted training step, one JSON line each.

What it measures (everything on synthetic 32x32x3 uint8 data resident on the device, with the
random crop + flip augmentation, normalisation and the per-step index gather inside jit, exactly
as :func:`jaxwm.engine.loop.fit` runs them):

* ``train_step`` -- the full SGD step of :func:`jaxwm.engine.train.make_train_step`, run as
  :func:`jaxwm.engine.train.make_train_chunk` chunks of ``--steps-per-call`` steps (one ``lax.scan``
  per call) over an index order from :func:`jaxwm.engine.train.epoch_permutation`. The first call
  (trace + lower + XLA compile + one chunk) is reported as ``compile_s``; then ``--warmup-calls``
  untimed calls; then ``--calls`` timed calls dispatched back to back with a single
  ``block_until_ready`` at the end: ``img_per_s = batch * steps_per_call * calls / time``.
* ``partial_step`` -- the same step with a trainable mask (default: the last stage and the head,
  ``layer4`` + ``head`` for ResNet18; :func:`jaxwm.engine.partition.trainable_mask`), the optimizer wrapped
  in :func:`jaxwm.engine.partition.masked`. ``ratio_vs_full`` is its img/s over ``train_step``'s img/s in
  the same process: XLA should skip the frozen prefix's backward pass, so it is > 1.
* ``epoch_real_layout`` -- whole epochs at the real CIFAR-10 layout (``--epoch-n`` = 50,000
  examples, chunking from :func:`jaxwm.engine.epochs.epoch_geometry`, a fresh permutation per epoch, and the
  loop's pipelined metric fetch: chunk ``i``'s metrics are read after chunk ``i + 1`` is
  dispatched). ``compile_s`` is the first epoch, compilation included.

Every row carries batch, dtype, img/s, ms/step, compile time (with its trace / lower / XLA-compile
breakdown and persistent-cache hits), steps timed, peak memory (the device allocator's
``peak_bytes_in_use`` where the backend reports it -- a process-wide peak, so later rows include
earlier ones -- else the host process's max RSS), the device, jax/jaxlib/flax/optax versions and
the date. ``--compile-cache DIR`` turns on JAX's persistent compilation cache, so a second
invocation shows the compile time with the cache warm.

``--cost-analysis`` adds XLA's flop estimate of one step and the achieved model TFLOP/s (to the
``train_step`` / ``partial_step`` rows; it compiles the bare step once more).

Defaults follow the backend. On a GPU: ResNet18, bfloat16, batch 512 and 1024, K = 50 steps per
call, 10 timed calls, 2 timed 50,000-example epochs. On CPU (a smoke test of the script, not a
performance figure): the tiny ResNet (``stage_sizes=(1, 1), widths=(8, 16)``), float32, batch
64, K = 5, 2 timed calls, 1,280-example epochs. XLA:CPU is slow here for two reasons: it emulates
bf16 convolutions, and inside a ``while`` loop (every ``lax.scan`` chunk) the backward
convolutions keep dimension orders (``b01f_01oi->b01f``, ``f01b_i01o->01bf`` in the compiled HLO)
that miss its fast convolution path (jax-ml/jax#12868): the tiny model's step takes ~17 ms jitted
on its own but ~350-550 ms inside a chunk (an XLA:CPU matter; GPU convolutions go to cuDNN).

Commands (from the repository root)::

    # CPU smoke (tiny ResNet, float32), about a minute on 2 cores:
    JAX_PLATFORMS=cpu python bench/train_throughput.py --model tiny --batch 64

    # GPU (H100 / H200), the figures recorded in bench/RESULTS.md (--out FILE.jsonl to keep them):
    python bench/train_throughput.py --model resnet18 --dtype bfloat16 --batch 512 1024

    # Compile-cache check: run twice, the second run's compile_s comes from the cache:
    python bench/train_throughput.py --compile-cache .gpu/jax_cache --what train_step

Figures, with command, device, versions and date, live in ``bench/RESULTS.md``; see
``bench/README.md`` for running this beside the reference scripts of ``../shared/bench``.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import importlib.metadata
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

try:
    from jaxwm import models
    from jaxwm.engine import epochs, optim, partition, train
except ImportError:  # run from a checkout without ``pip install -e .``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from jaxwm import models
    from jaxwm.engine import epochs, optim, partition, train

WHATS = ("train_step", "partial_step", "epoch_real_layout")
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10


# --------------------------------------------------------------------------------------------
# Compile-time accounting via jax.monitoring (trace / lower / compile durations, cache events).
# --------------------------------------------------------------------------------------------

_EVENTS: collections.Counter = collections.Counter()
_DURATIONS: collections.Counter = collections.Counter()
_DURATION_KEYS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace_s",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
    "/jax/core/compile/backend_compile_duration": "xla_compile_s",
    "/jax/compilation_cache/cache_retrieval_time_sec": "cache_load_s",
}
_EVENT_KEYS = {
    "/jax/compilation_cache/cache_hits": "cache_hits",
    "/jax/compilation_cache/cache_misses": "cache_misses",
}


def _on_event(event: str, **_: object) -> None:
    if event in _EVENT_KEYS:
        _EVENTS[_EVENT_KEYS[event]] += 1


def _on_duration(event: str, duration: float, **_: object) -> None:
    if event in _DURATION_KEYS:
        _DURATIONS[_DURATION_KEYS[event]] += duration


jax.monitoring.register_event_listener(_on_event)
jax.monitoring.register_event_duration_secs_listener(_on_duration)


class _CompileWindow:
    """Compile durations and cache events recorded between ``__enter__`` and ``__exit__``."""

    def __enter__(self) -> _CompileWindow:
        self._e, self._d = _EVENTS.copy(), _DURATIONS.copy()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self.t0
        self.durations = {k: _DURATIONS[k] - self._d[k] for k in _DURATION_KEYS.values()}
        self.events = {k: _EVENTS[k] - self._e[k] for k in _EVENT_KEYS.values()}

    def fields(self) -> dict:
        out = {"compile_s": round(self.wall_s, 3)}
        out.update({k: round(v, 3) for k, v in self.durations.items()})
        if jax.config.jax_compilation_cache_dir:  # cache events exist only with the cache on
            out.update(self.events)
        else:
            out.pop("cache_load_s")
        return out


# --------------------------------------------------------------------------------------------
# Environment description.
# --------------------------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_rev() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _environment() -> dict:
    dev = jax.devices()[0]
    return {
        "device": f"{dev.platform}:{dev.device_kind}",
        "platform": dev.platform,
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "jaxlib": _version("jaxlib"),
        "flax": _version("flax"),
        "optax": _version("optax"),
        "python": platform.python_version(),
        "git": _git_rev(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def _peak_memory() -> dict:
    """Device allocator peak where available (GPU/TPU), else the host process's max RSS."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # some backends raise instead of returning None
        stats = None
    if stats and "peak_bytes_in_use" in stats:
        return {
            "peak_mem_bytes": int(stats["peak_bytes_in_use"]),
            "peak_mem_source": "device_peak_bytes_in_use",
        }
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return {"peak_mem_bytes": int(rss * scale), "peak_mem_source": "host_max_rss"}


def _count_files(path: str | None) -> int | None:
    if path is None or not os.path.isdir(path):
        return None
    return sum(len(files) for _, _, files in os.walk(path))


# --------------------------------------------------------------------------------------------
# Set-up shared by the measurements.
# --------------------------------------------------------------------------------------------


def _build_model(name: str, dtype: str) -> models.Model:
    if name == "resnet18":
        return models.resnet18(NUM_CLASSES, dtype=dtype)
    if name == "tiny":
        return models.resnet(NUM_CLASSES, stage_sizes=(1, 1), widths=(8, 16), dtype=dtype)
    raise ValueError(f"unknown model {name!r}")


def _last_stage(model_name: str) -> str:
    return "layer4" if model_name == "resnet18" else "layer2"


def _synthetic_data(n: int, seed: int) -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *IMAGE_SHAPE), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, (n,), dtype=np.int32)
    return jax.device_put(images), jax.device_put(labels)


def _make_step(model: models.Model, patterns: list[str] | None, seed: int):
    """(step, initial TrainState, mask info) for the full or the partial (masked) step."""
    tx = optim.make_optimizer(peak_lr=0.1, total_steps=1_000_000, warmup_steps=0)
    mask, info = None, {}
    if patterns:
        shapes = jax.eval_shape(
            model.init, jax.random.key(seed), jnp.zeros((1, *IMAGE_SHAPE), jnp.float32)
        )[0]
        mask = partition.trainable_mask(shapes, patterns, log_table=False)
        tx = partition.masked(tx, mask)
        leaves = zip(jax.tree.leaves(shapes), jax.tree.leaves(mask), strict=True)
        n_train = sum(s.size for s, m in leaves if m)
        n_all = sum(s.size for s in jax.tree.leaves(shapes))
        info = {
            "trainable_patterns": list(patterns),
            "trainable_fraction": round(n_train / n_all, 4),
            "frozen_modules": len(partition.frozen_modules(mask)),
        }
    sample = jnp.zeros((1, *IMAGE_SHAPE), jnp.float32)
    ts = train.init_train_state(model.init, tx, jax.random.key(seed), sample)
    step = train.make_train_step(model.apply, tx, CIFAR_MEAN, CIFAR_STD, mask=mask)
    return step, ts, info


def _executable_memory(jitted, *args) -> dict:
    """XLA's memory plan for this executable (a hit in jit's cache: nothing is recompiled)."""
    try:
        mem = jitted.lower(*args).compile().memory_analysis()
        return {
            "exec_temp_bytes": int(mem.temp_size_in_bytes),
            "exec_argument_bytes": int(mem.argument_size_in_bytes),
            "exec_output_bytes": int(mem.output_size_in_bytes),
        }
    except Exception:  # best-effort; not every backend / version provides it
        return {}


def _finite_loss(metrics) -> float:
    m = jax.device_get(metrics)
    return float(m["loss_sum"]) / max(float(m["count"]), 1.0)


def _cost_analysis(step, ts, images, labels, batch: int) -> dict:
    """XLA's flop / byte estimate for one step (compiled on its own, outside any scan)."""
    try:
        compiled = jax.jit(step).lower(ts, images[:batch], labels[:batch]).compile()
        cost = compiled.cost_analysis()
        if isinstance(cost, list | tuple):
            cost = cost[0] if cost else {}
        return {
            "flops_per_step": float(cost.get("flops", float("nan"))),
            "bytes_per_step": float(cost.get("bytes accessed", float("nan"))),
        }
    except Exception as e:  # cost analysis is best-effort and backend dependent
        return {"cost_analysis_error": f"{type(e).__name__}: {e}"}


# --------------------------------------------------------------------------------------------
# Measurements.
# --------------------------------------------------------------------------------------------


def measure_chunks(args, model, batch: int, patterns: list[str] | None) -> dict:
    """``train_step`` / ``partial_step``: K-step chunks over a device-resident dataset."""
    n = args.n or 10 * batch
    k = args.steps_per_call
    images, labels = _synthetic_data(n, args.seed)
    step, ts, info = _make_step(model, patterns, args.seed)
    run = train.make_train_chunk(step, batch, k)
    # One call reads k * batch indices from ``start``; when that exceeds an epoch of ``n`` the
    # order is several consecutive epoch permutations, as successive epochs would be.
    data_key = jax.random.key(args.seed + 1)
    reps = math.ceil(k * batch / n)
    perm = jnp.concatenate([train.epoch_permutation(data_key, n, e) for e in range(reps)])
    start = 0
    jax.block_until_ready((images, labels, perm, ts))

    with _CompileWindow() as cw:
        ts, m = run(ts, images, labels, perm, start)
        jax.block_until_ready((ts, m))
    for _ in range(args.warmup_calls):
        ts, m = run(ts, images, labels, perm, start)
    jax.block_until_ready((ts, m))

    t0 = time.perf_counter()
    for _ in range(args.calls):
        ts, m = run(ts, images, labels, perm, start)
    jax.block_until_ready((ts, m))
    dt = time.perf_counter() - t0

    trace = None
    if args.trace:  # one more call under the profiler, after (and outside) the timed ones
        trace = str(Path(args.trace) / f"{'partial' if patterns else 'full'}_b{batch}")
        with jax.profiler.trace(trace):
            ts, m = run(ts, images, labels, perm, start)
            jax.block_until_ready((ts, m))

    steps = k * args.calls
    row = {
        "img_per_s": round(batch * steps / dt, 1),
        "step_ms": round(1000 * dt / steps, 3),
        **cw.fields(),
        # What the first call cost beyond a steady-state call: compilation and first-run effects.
        "compile_overhead_s": round(cw.wall_s - dt / args.calls, 3),
        "steps_timed": steps,
        "steps_per_call": k,
        "calls": args.calls,
        "n": n,
        "final_loss": round(_finite_loss(m), 4),
        **({"trace": trace} if trace else {}),
        **info,
        **_executable_memory(run, ts, images, labels, perm, start),
    }
    if args.cost_analysis:
        row.update(_cost_analysis(step, ts, images, labels, batch))
        if "flops_per_step" in row:
            row["model_tflop_per_s"] = float(f"{row['flops_per_step'] * steps / dt / 1e12:.3g}")
    return row


def measure_epoch(args, model, batch: int) -> dict:
    """``epoch_real_layout``: whole epochs as :func:`jaxwm.engine.loop.fit` runs them (no eval)."""
    n = args.epoch_n
    chunk, n_chunks = epochs.epoch_geometry(n, batch, args.epoch_steps_per_call)
    images, labels = _synthetic_data(n, args.seed)
    step, ts, _ = _make_step(model, None, args.seed)
    run = train.make_train_chunk(step, batch, chunk)
    data_key = jax.random.key(args.seed + 1)
    jax.block_until_ready((images, labels, ts))

    def epoch(ts, e):
        perm = train.epoch_permutation(data_key, n, e)
        pending = None
        for c in range(n_chunks):
            ts, m = run(ts, images, labels, perm, c * chunk * batch)
            if pending is not None:  # read the previous chunk while this one runs
                jax.device_get(pending)
            pending = m
        return ts, jax.device_get(pending)

    with _CompileWindow() as cw:
        ts, m = epoch(ts, 0)
    t0 = time.perf_counter()
    for e in range(1, 1 + args.epochs):
        ts, m = epoch(ts, e)
    dt = time.perf_counter() - t0

    steps = chunk * n_chunks * args.epochs
    return {
        "img_per_s": round(batch * steps / dt, 1),
        "step_ms": round(1000 * dt / steps, 3),
        **cw.fields(),
        "compile_overhead_s": round(cw.wall_s - dt / args.epochs, 3),
        "steps_timed": steps,
        "steps_per_call": chunk,
        "calls": n_chunks * args.epochs,
        "epochs_timed": args.epochs,
        "n": n,
        "final_loss": round(_finite_loss(m), 4),
        **_executable_memory(run, ts, images, labels, train.epoch_permutation(data_key, n, 0), 0),
    }


# --------------------------------------------------------------------------------------------
# CLI.
# --------------------------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", choices=("resnet18", "tiny"), help="default: tiny on CPU")
    p.add_argument(
        "--dtype", choices=("bfloat16", "float32", "float16"), help="default: float32 on CPU"
    )
    p.add_argument("--batch", type=int, nargs="+", help="default: 512 1024 (64 on CPU)")
    p.add_argument("--what", nargs="+", choices=WHATS, default=list(WHATS))
    p.add_argument(
        "--steps-per-call", type=int, help="steps per jitted call, K (default 50; 5 on CPU)"
    )
    p.add_argument("--n", type=int, default=0, help="synthetic examples (default 10 * batch)")
    p.add_argument("--calls", type=int, help="timed calls (default 10; 2 on CPU)")
    p.add_argument("--warmup-calls", type=int, default=1, help="untimed calls after the first")
    p.add_argument(
        "--epoch-n", type=int, help="examples per real-layout epoch (default 50000; 1280 on CPU)"
    )
    p.add_argument(
        "--epoch-steps-per-call",
        type=int,
        default=0,
        help="steps per call for epoch_real_layout (0 = whole epoch per call, the config default)",
    )
    p.add_argument("--epochs", type=int, help="timed epochs (default 2, 1 on CPU)")
    p.add_argument(
        "--train-patterns",
        nargs="+",
        help="trainable path patterns for partial_step (default: last stage and head)",
    )
    p.add_argument("--compile-cache", metavar="DIR", help="enable JAX's persistent compile cache")
    p.add_argument(
        "--trace", metavar="DIR",
        help="also record one untimed chunk per step kind with jax.profiler (view in Perfetto/"
        "TensorBoard) under DIR/{full,partial}_b<batch>",
    )  # fmt: skip
    p.add_argument(
        "--cost-analysis",
        action="store_true",
        help="also compile one bare step to report XLA's flops/bytes estimate",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="FILE.jsonl", help="also append the JSON lines here")
    return p.parse_args(argv)


def _enable_compile_cache(path: str) -> None:
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    if args.compile_cache:  # before anything is compiled
        _enable_compile_cache(args.compile_cache)
    cache_before = _count_files(args.compile_cache)

    on_cpu = jax.default_backend() == "cpu"
    args.model = args.model or ("tiny" if on_cpu else "resnet18")
    args.dtype = args.dtype or ("float32" if on_cpu else "bfloat16")
    args.batch = args.batch or ([64] if on_cpu else [512, 1024])
    args.steps_per_call = args.steps_per_call or (5 if on_cpu else 50)
    args.calls = args.calls or (2 if on_cpu else 10)
    args.epoch_n = args.epoch_n or (1280 if on_cpu else 50_000)
    args.epochs = args.epochs or (1 if on_cpu else 2)
    if on_cpu:
        # XLA:CPU ignores most buffer donations; the warning would repeat for every call.
        warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
        if args.model == "resnet18":
            print("note: ResNet18 on CPU takes seconds per step; --model tiny", file=sys.stderr)
        if args.dtype != "float32":
            print("note: XLA:CPU emulates low-precision convolutions slowly", file=sys.stderr)

    env = _environment()
    model = _build_model(args.model, args.dtype)
    patterns = args.train_patterns or [_last_stage(args.model), "head"]
    command = " ".join(["python", *sys.argv]) if argv is None else " ".join(argv)

    for batch in args.batch:
        full_img_s = None
        for what in [w for w in WHATS if w in args.what]:
            if what == "train_step":
                res = measure_chunks(args, model, batch, None)
                full_img_s = res["img_per_s"]
            elif what == "partial_step":
                res = measure_chunks(args, model, batch, patterns)
                res["ratio_vs_full"] = (
                    round(res["img_per_s"] / full_img_s, 3) if full_img_s else None
                )
            else:
                res = measure_epoch(args, model, batch)
            row = {
                "impl": "jaxwm",
                "what": what,
                "model": args.model,
                "batch": batch,
                "dtype": args.dtype,
                **res,
                **_peak_memory(),
                **env,
            }
            if args.compile_cache:
                row["compile_cache"] = args.compile_cache
                row["cache_entries_before"] = cache_before
                row["cache_entries_now"] = _count_files(args.compile_cache)
            row["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            row["command"] = command
            line = json.dumps(row)
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(line + "\n")


if __name__ == "__main__":
    main()
