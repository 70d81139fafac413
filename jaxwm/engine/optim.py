"""Optimizers and learning-rate schedules whose numbers live in the optimizer state.

optax schedules close over their constants (peak rate, run length), so each distinct value
compiles a distinct training step: a run with one more epoch, or another learning rate, misses
the persistent compilation cache (about 20 s of compilation for ResNet18 on an H200). Here the
schedule's numbers are arrays in the optimizer state, so every run of a given structure
(optimizer kind, schedule kind, momentum, weight decay, masks) compiles to the same program,
and the values only change what the state holds. The schedules are the same functions as the
optax ones (:func:`lr_schedule`; a table-driven test compares them).

Example:
  >>> tx = make_optimizer(peak_lr=0.4, total_steps=4900, warmup_steps=1176, schedule="linear")
  >>> opt_state = tx.init(params)                      # holds 0.4, 4900 and 1176 as arrays
  >>> updates, opt_state = tx.update(grads, opt_state, params)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

PyTree = Any
SCHEDULES = ("cosine", "linear", "constant")


def _check(kind: str, total_steps: int) -> None:
    if kind not in SCHEDULES:
        raise ValueError(f"schedule kind must be 'cosine', 'linear' or 'constant', got {kind!r}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")


def lr_schedule(
    peak_lr: float,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    kind: str = "cosine",
    final_fraction: float = 0.0,
) -> optax.Schedule:
    """Learning-rate schedule: linear warm-up, then ``cosine``/``linear`` decay or ``constant``.

    Args:
      peak_lr: Learning rate reached after warm-up.
      total_steps: Length of the run in optimizer steps (must be >= 1).
      warmup_steps: Linear warm-up from 0 (clipped to ``total_steps``).
      kind: "cosine", "linear" (one-cycle-like triangle) or "constant".
      final_fraction: Final learning rate as a fraction of ``peak_lr`` for the decaying kinds.

    Returns:
      An optax schedule (constants baked in); :func:`scale_by_schedule_state` is the same
      function with its numbers in the optimizer state.
    """
    _check(kind, total_steps)
    warmup_steps = min(max(warmup_steps, 0), total_steps)
    decay = total_steps - warmup_steps
    if kind == "constant":
        after = optax.constant_schedule(peak_lr)
    elif kind == "cosine":
        after = optax.cosine_decay_schedule(peak_lr, max(decay, 1), alpha=final_fraction)
    else:
        after = optax.linear_schedule(peak_lr, peak_lr * final_fraction, max(decay, 1))
    if warmup_steps == 0:
        return after
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak_lr, warmup_steps), after], [warmup_steps]
    )


class ScheduleState(NamedTuple):
    """State of :func:`scale_by_schedule_state`: the step count and the schedule's numbers."""

    count: jax.Array  # int32 steps taken
    peak: jax.Array  # float32 peak learning rate
    total: jax.Array  # float32 run length in steps
    warmup: jax.Array  # float32 warm-up steps (already clipped to total)
    final_fraction: jax.Array  # float32


def schedule_value(kind: str, s: ScheduleState) -> jax.Array:
    """The learning rate at ``s.count`` (traceable; equals :func:`lr_schedule`'s value).

    The arithmetic follows optax's schedules operation by operation (``linear_schedule``,
    ``cosine_decay_schedule``, ``join_schedules``): evaluated alone, the values are
    bit-identical to them (with ``final_fraction`` 0, as :func:`make_optimizer` uses them).
    Fused into a training step, XLA may round differently from the constant-folded optax
    version, which changes a run at the level of float noise.
    """
    count = s.count
    # Warm-up: optax.linear_schedule(0, peak, warmup), i.e. polynomial_schedule with power 1.
    frac = 1 - jnp.clip(count, 0, s.warmup) / jnp.maximum(s.warmup, 1.0)
    ramp = (0.0 - s.peak) * frac**1 + s.peak
    t = count - s.warmup  # join_schedules: the second schedule sees steps since the boundary
    decay = jnp.maximum(s.total - s.warmup, 1.0)
    if kind == "constant":
        after = s.peak
    elif kind == "cosine":
        t = jnp.minimum(t, decay)
        cosine_decay = 0.5 * (1 + jnp.cos(jnp.pi * t / decay))
        after = s.peak * ((1 - s.final_fraction) * cosine_decay**1.0 + s.final_fraction)
    else:
        end = s.peak * s.final_fraction
        frac_decay = 1 - jnp.clip(t, 0, decay) / decay
        after = (s.peak - end) * frac_decay**1 + end
    return jnp.where(count < s.warmup, ramp, after)


def scale_by_schedule_state(
    kind: str,
    peak_lr: float,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    final_fraction: float = 0.0,
) -> optax.GradientTransformation:
    """Multiplies updates by ``-lr(count)``, with the schedule's numbers held in the state.

    Like ``optax.scale_by_learning_rate(lr_schedule(...))``, except that ``update`` reads the
    numbers from the state, never from this function's arguments: transformations built with
    different numbers but the same ``kind`` share one compiled update.

    Args:
      kind: "cosine", "linear" or "constant" (static: it shapes the program).
      peak_lr, total_steps, warmup_steps, final_fraction: As in :func:`lr_schedule`; stored
        by ``init``.
    """
    _check(kind, total_steps)

    def init(params: PyTree) -> ScheduleState:
        del params
        f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
        warmup = min(max(warmup_steps, 0), total_steps)
        return ScheduleState(
            jnp.zeros((), jnp.int32), f32(peak_lr), f32(total_steps), f32(warmup),
            f32(final_fraction),
        )  # fmt: skip

    def update(updates, state: ScheduleState, params=None):
        del params
        lr = schedule_value(kind, state)
        updates = jax.tree.map(lambda u: (-lr * u).astype(u.dtype), updates)
        return updates, state._replace(count=optax.safe_int32_increment(state.count))

    return optax.GradientTransformation(init, update)


def make_optimizer(
    *,
    peak_lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    schedule: str = "cosine",
    optimizer: str = "sgd",
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 5e-4,
) -> optax.GradientTransformation:
    """SGD (Nesterov) or AdamW with decoupled weight decay on kernels only.

    The same transformations as ``optax.sgd`` / ``optax.adamw`` over :func:`lr_schedule`, with
    the schedule's numbers in the state (:func:`scale_by_schedule_state`), so runs that differ
    only in those numbers share compilations. Weight decay skips 1-D leaves (biases, BatchNorm
    scale/shift), the usual choice for ResNets. Wrap the result with
    :func:`jaxwm.engine.partition.masked` to freeze parameters.
    """
    if optimizer not in ("sgd", "adamw"):
        raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
    lr = scale_by_schedule_state(schedule, peak_lr, total_steps, warmup_steps=warmup_steps)

    def decay_mask(params: PyTree) -> PyTree:
        return jax.tree.map(lambda p: p.ndim > 1, params)

    decayed = optax.add_decayed_weights(weight_decay, mask=decay_mask)
    if optimizer == "sgd":
        moment = optax.trace(decay=momentum, nesterov=nesterov) if momentum else optax.identity()
        return optax.chain(decayed, moment, lr)
    return optax.chain(optax.scale_by_adam(), decayed, lr)
