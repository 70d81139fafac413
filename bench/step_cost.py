"""XLA's cost analysis of jaxwm's training step beside the plain Flax reference step; JSON.

Both steps are compiled for the current backend at the same batch and dtype, and XLA's own
estimate of their floating-point operations and bytes accessed is printed, one JSON line per
step. Equal figures mean jaxwm's step (with its in-jit gather, crop, flip and normalisation)
does the same work as the reference: a faster step must then come from better kernels or a
different computation, not from removing overhead. Runs on CPU in about a minute (no GPU
needed); the reference is ``../shared/bench/flax_resnet18_bench.py`` (``--ref-dir``).

Command (from the repository root)::

    JAX_PLATFORMS=cpu python bench/step_cost.py --batch 64
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from jaxwm import models  # noqa: E402
from jaxwm.engine import optim, train  # noqa: E402


def _cost(compiled) -> dict:
    c = compiled.cost_analysis()
    c = c[0] if isinstance(c, list) else c
    return {"flops": float(c["flops"]), "bytes_accessed": float(c["bytes accessed"])}


def reference_cost(ref_dir: str, batch: int) -> dict:
    """The plain Flax reference's step (same definition as its benchmark), compiled."""
    os.environ.setdefault("PEER_DTYPE", "bfloat16")
    sys.path.insert(0, ref_dir)
    import flax_resnet18_bench as ref  # noqa: PLC0415 (lives outside the package)

    m = ref.ResNet18()
    x, y = jnp.zeros((batch, 32, 32, 3)), jnp.zeros((batch,), jnp.int32)
    v = m.init(jax.random.key(2), x[:2])
    tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9, nesterov=True))

    def step(params, stats, opt, x, y):
        def loss_fn(p):
            logits, upd = m.apply({"params": p, "batch_stats": stats}, x, mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), upd

        (loss, upd), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        u, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, u), upd["batch_stats"], opt, loss

    args = (v["params"], v["batch_stats"], tx.init(v["params"]), x, y)
    return _cost(jax.jit(step).lower(*args).compile())


def jaxwm_cost(batch: int, augment: bool) -> dict:
    """jaxwm's step (uint8 batch in, augmentation and normalisation inside), compiled."""
    model = models.resnet18(10, dtype="bfloat16")
    tx = optim.make_optimizer(peak_lr=0.1, total_steps=1000)
    ts = train.init_train_state(model.init, tx, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    step = train.make_train_step(
        model.apply, tx, (0.5,) * 3, (0.25,) * 3, crop_pad=4 if augment else 0, flip=augment
    )
    x, y = jnp.zeros((batch, 32, 32, 3), jnp.uint8), jnp.zeros((batch,), jnp.int32)
    return _cost(jax.jit(step).lower(ts, x, y).compile())


def main(argv: list[str] | None = None) -> list[dict]:
    """Prints one JSON line per step and returns them.

    Example:
      >>> main(["--batch", "32"])
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--ref-dir", default=str(Path(__file__).resolve().parents[2] / "shared/bench"))
    args = p.parse_args(argv)
    dev = jax.devices()[0]
    common = {
        "batch": args.batch, "dtype": "bfloat16", "device": f"{dev.platform}:{dev.device_kind}",
        "jax": jax.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    rows = [
        {"step": "jaxwm (gather, crop, flip, normalise in jit)", **jaxwm_cost(args.batch, True)},
        {"step": "jaxwm without augmentation", **jaxwm_cost(args.batch, False)},
    ]
    if Path(args.ref_dir, "flax_resnet18_bench.py").is_file():
        rows.append({"step": "plain Flax reference", **reference_cost(args.ref_dir, args.batch)})
    else:
        print(f"reference not found in {args.ref_dir}; pass --ref-dir", file=sys.stderr)
    for row in rows:
        row.update(common)
        row["gflop_per_image"] = row["flops"] / args.batch / 1e9
        print(json.dumps(row))
    return rows


if __name__ == "__main__":
    main()
