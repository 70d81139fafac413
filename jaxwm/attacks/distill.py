"""Distillation / model extraction: train a fresh student on the stolen model's outputs.

The attacker never copies weights: it queries the stolen (teacher) model on its own unlabelled
images and trains a freshly initialised student to imitate the answers, either the softened
probabilities (Hinton et al.'s KL at temperature ``T``) or the hard argmax labels. A watermark
survives only if the teacher's behaviour on ordinary inputs transfers it; this is the
Watermark-Robustness-Toolbox's distillation/extraction family (Lukas et al. 2022).

The attacker's own labels are not an input at all: the student sees only teacher outputs.

Example:
  >>> p, s = distill(model.apply, params, state, model.init, model.apply, x_u8,
  ...                mean=m, std=sd, key=jax.random.key(0), epochs=10, lr=0.05)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxwm.attacks.finetune import attack_hparams
from jaxwm.engine import compiled, train
from jaxwm.engine import epochs as engine
from jaxwm.engine.epochs import ApplyFn, InitFn, ParamsState
from jaxwm.engine.hparams import Hparams, program_key

PyTree = Any
Carry = tuple[train.TrainState, PyTree, PyTree]  # (student, teacher params, teacher state)


def make_distill_step(
    teacher_apply: ApplyFn,
    student_apply: ApplyFn,
    tx: optax.GradientTransformation,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    soft: bool = True,
    temperature: float = 4.0,
    crop_pad: int = 0,
    flip: bool = False,
) -> Callable[[Carry, jax.Array, jax.Array], tuple[Carry, dict[str, jax.Array]]]:
    """One distillation step ``step((ts, tp, ts_), images_u8, ignored) -> (carry, metrics)``.

    The teacher's parameters ride in the carry rather than the closure, so they are inputs of
    the compiled program instead of constants baked into it. The third argument only matches
    :func:`jaxwm.engine.train.make_train_chunk`'s step signature and is never read.

    Args:
      teacher_apply, student_apply: Model applies (contract in :mod:`jaxwm.models`).
      tx: Student optimizer.
      mean, std: Per-channel normalisation.
      soft: KL to the teacher's softmax at ``temperature`` (scaled by ``T**2`` so gradient
        magnitudes do not shrink with ``T``); otherwise cross-entropy to its argmax.
      temperature: Softening temperature ``T`` (> 0).
      crop_pad, flip: Augmentation; the teacher is queried on the augmented images.

    Returns:
      The step; metrics are sums: ``loss_sum``, ``correct`` (student agrees with the teacher),
      ``count``.

    Example:
      >>> step = make_distill_step(model.apply, model.apply, tx, m, sd)
    """
    t = float(temperature)

    def step(carry: Carry, images: jax.Array, _ignored: jax.Array):
        ts, t_params, t_state = carry
        key = jax.random.fold_in(jax.random.wrap_key_data(ts.rng), ts.step)
        x = train.normalize(train.augment(key, images, crop_pad=crop_pad, flip=flip), mean, std)
        t_logits, _ = teacher_apply(t_params, t_state, x, train=False)
        t_logits = jax.lax.stop_gradient(t_logits.astype(jnp.float32))
        t_labels = jnp.argmax(t_logits, -1)

        def loss_fn(p):
            logits, new_state = student_apply(p, ts.state, x, train=True)
            logits = logits.astype(jnp.float32)
            if soft:
                target = jax.nn.softmax(t_logits / t)
                kl = optax.losses.kl_divergence(jax.nn.log_softmax(logits / t), target)
                loss = (t * t) * kl.mean()
            else:
                loss = train.cross_entropy(logits, t_labels)
            return loss, (logits, new_state)

        (loss, (logits, new_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(ts.params)
        updates, opt_state = tx.update(grads, ts.opt_state, ts.params)
        params = optax.apply_updates(ts.params, updates)
        n = images.shape[0]
        metrics = {
            "loss_sum": loss * n,
            "correct": jnp.sum(jnp.argmax(logits, -1) == t_labels),
            "count": jnp.asarray(n, jnp.int32),
        }
        new_ts = train.TrainState(params, new_state, opt_state, ts.step + 1, ts.rng)
        return (new_ts, t_params, t_state), metrics

    return step


def distill(
    teacher_apply: ApplyFn,
    teacher_params: PyTree,
    teacher_state: PyTree,
    student_init: InitFn,
    student_apply: ApplyFn,
    images: Any,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    key: jax.Array,
    epochs: int,
    lr: float,
    batch_size: int = 128,
    soft: bool = True,
    temperature: float = 4.0,
    crop_pad: int = 0,
    flip: bool = False,
    optimizer: str = "sgd",
    schedule: str = "cosine",
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
) -> ParamsState:
    """Extracts the teacher into a freshly initialised student using only unlabelled images.

    Args:
      teacher_apply, teacher_params, teacher_state: The stolen model (queried, not modified).
      student_init: ``init(key, sample) -> (params, state)`` of the student architecture
        (it may differ from the teacher's).
      student_apply: The student's apply.
      images: uint8 NHWC attacker images (no labels: the teacher labels them).
      mean, std: Per-channel normalisation (shared by teacher and student).
      key: PRNG key for the student's initialisation, shuffling and augmentation.
      epochs: Training epochs of the student.
      lr: Peak learning rate.
      batch_size: Batch size, clipped to the number of images.
      soft, temperature: Soft (KL at ``temperature``) or hard (argmax) teacher targets.
      crop_pad, flip: Augmentation (off by default).
      optimizer, schedule, momentum, weight_decay: See :func:`jaxwm.attacks.finetune.attack_hparams`;
        the student trains from scratch, so the default schedule decays (cosine).

    Returns:
      ``(params, state)`` of the student.

    Example:
      >>> p, s = distill(model.apply, params, state, model.init, model.apply, x_u8,
      ...                mean=m, std=sd, key=jax.random.key(0), epochs=10, lr=0.05, soft=False)
    """
    if epochs < 0 or lr <= 0 or temperature <= 0:
        raise ValueError(
            f"need epochs >= 0, lr > 0, temperature > 0; got {epochs}, {lr}, {temperature}"
        )
    hp = attack_hparams(
        epochs, lr, batch_size=batch_size, crop_pad=crop_pad, flip=flip, optimizer=optimizer,
        schedule=schedule, momentum=momentum, weight_decay=weight_decay,
    )  # fmt: skip
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    k_init, k_data = jax.random.split(key)
    images = jnp.asarray(images, jnp.uint8)
    n = int(images.shape[0])
    batch, steps = engine.epoch_shape(n, hp.batch_size, wrap=False)
    tx = engine.optimizer(hp, None, epochs * steps)  # this run's numbers, for init
    ts = train.init_train_state(student_init, tx, k_init, train.normalize(images[:1], mean, std))
    run = _program(
        teacher_apply, student_apply, program_key(hp, batch), tuple(map(float, mean)),
        tuple(map(float, std)), bool(soft), float(temperature), steps,
    )  # fmt: skip
    # The chunk donates its carry: copy the teacher so the caller's arrays stay valid.
    carry = (ts, engine.copy_tree(teacher_params), engine.copy_tree(teacher_state))
    unused_labels = jnp.zeros((n,), jnp.int32)
    for epoch in range(epochs):
        carry, _ = run(carry, images, unused_labels, engine.epoch_order(k_data, n, epoch, n), 0)
    return carry[0].params, carry[0].state


@compiled.cached
def _program(
    teacher_apply: ApplyFn,
    student_apply: ApplyFn,
    hp: Hparams,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    soft: bool,
    temperature: float,
    steps: int,
) -> Callable:
    """The compiled distillation epoch (the optimizer a template: its numbers are state)."""
    step = make_distill_step(
        teacher_apply, student_apply, engine.optimizer(hp, None, 1), mean, std, soft=soft,
        temperature=temperature, crop_pad=hp.crop_pad, flip=hp.flip,
    )  # fmt: skip
    return train.make_train_chunk(step, hp.batch_size, steps)
