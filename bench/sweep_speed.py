"""Sweep speed: N sequential ``loop.fit`` runs vs one N-seed vmapped ``sweep.fit_sweep``; JSON.

Both sides train the same runs (same seeds, hyper-parameters, MNIST-shaped synthetic data:
28x28x1 uint8, 10 classes, resident on one device) and both walls include what a user waits
for: compilation (the sequential fits share one compiled step within this process, as
``loop.fit`` caches it; the sweep compiles its vmapped one) and evaluation. ``*_last_epoch_s`` compare the last
epoch only (no compilation when ``--epochs`` > 1): the sequential runs' summed last epochs vs
the sweep's.
The target on a GPU is ``speedup >= 3`` for 4 seeds of a small ResNet; on CPU this is a smoke
test of the script (XLA:CPU runs vmapped convolutions as grouped ones, not faster).

Commands (from the repository root)::

    JAX_PLATFORMS=cpu python bench/sweep_speed.py          # CPU smoke, about a minute
    python bench/sweep_speed.py --runs 4 --epochs 3        # GPU: the figure to record
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxwm import data, models  # noqa: E402
from jaxwm.engine import loop, parallel, sweep  # noqa: E402
from jaxwm.engine.hparams import Hparams  # noqa: E402


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=4, help="seeds (runs) on each side")
    p.add_argument("--epochs", type=int, help="default 3 (1 on CPU)")
    p.add_argument("--n", type=int, help="training examples (default 60000; 512 on CPU)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument(
        "--widths", type=int, nargs="+", help="ResNet stage widths (default 16 32; 4 8 on CPU)"
    )
    p.add_argument("--out", metavar="FILE.jsonl", help="also append the JSON line here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Runs both sides and prints one JSON line.

    Args:
      argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
      The JSON row as a dict.

    Example:
      >>> main(["--runs", "2", "--epochs", "1", "--n", "256", "--widths", "4", "8"])
    """
    args = _parse(argv)
    cpu = jax.default_backend() == "cpu"
    epochs = args.epochs or (1 if cpu else 3)
    n = args.n or (512 if cpu else 60000)
    widths = tuple(args.widths or ((4, 8) if cpu else (16, 32)))
    source = f"synthetic:train={n},test={max(n // 6, 64)},height=28,width=28,channels=1,classes=10"
    ds = data.load_dataset(source)
    model = models.resnet(10, stage_sizes=(1,) * len(widths), widths=widths)
    hp = Hparams(epochs=epochs, batch_size=args.batch, peak_lr=0.05, eval_every=0)
    seeds = list(range(args.runs))

    t0 = time.perf_counter()
    fits = [
        loop.fit(model.init, model.apply, ds, hp, seed=s, progress=False, data_parallel=False)
        for s in seeds
    ]
    jax.block_until_ready([f.state for f in fits])
    sequential_s = time.perf_counter() - t0

    one_device = parallel.data_mesh(jax.devices()[:1])
    t0 = time.perf_counter()
    runs = sweep.fit_sweep(model.init, model.apply, ds, hp, seeds, mesh=one_device, progress=False)
    sweep_s = time.perf_counter() - t0

    dev = jax.devices()[0]
    row = {
        "what": "sweep_speed",
        "runs": args.runs,
        "epochs": epochs,
        "train_examples": n,
        "batch": args.batch,
        "model": model.name,
        "params": models.count_params(fits[0].state.params),
        "sequential_s": sequential_s,
        "sweep_s": sweep_s,
        "speedup": sequential_s / sweep_s,
        "sequential_last_epoch_s": sum(f.history[-1]["epoch_s"] for f in fits),
        "sweep_last_epoch_s": runs[0].history[-1]["epoch_s"],
        "test_acc_sequential": sweep.aggregate([f.test_accuracy for f in fits]),
        "test_acc_sweep": sweep.aggregate([r.test_accuracy for r in runs]),
        "max_acc_diff": float(
            np.max(
                [abs(f.test_accuracy - r.test_accuracy) for f, r in zip(fits, runs, strict=True)]
            )
        ),
        "device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}",
        "jax": jax.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }
    row["epoch_speedup"] = row["sequential_last_epoch_s"] / row["sweep_last_epoch_s"]
    line = json.dumps(row)
    print(line)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")
    return row


if __name__ == "__main__":
    main()
