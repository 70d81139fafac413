"""The one hyper-parameter type of every training run: victim training, embedding, attacks, sweeps.

A :class:`Hparams` is explicit values (configs map onto it in :mod:`jaxwm.runner`); the engine
builds the optimizer from it (:func:`optimizer_for`) and keys its compiled programs on
:func:`program_key`, the same hyper-parameters with every number that lives in the optimizer
state (run length, peak rate, warm-up) or only in the host loop normalised away.

Example:
  >>> hp = Hparams(epochs=30, batch_size=128, peak_lr=0.1)
  >>> tx = optimizer_for(hp, total_steps=30 * 390)
"""

from __future__ import annotations

import dataclasses

import optax

from jaxwm.engine import optim

# How stateful layers train (see Hparams.bn_mode and jaxwm.engine.train.make_train_step).
BN_MODES = ("inference", "trainable", "all")


@dataclasses.dataclass(frozen=True)
class Hparams:
    """Training hyper-parameters (frozen and hashable: part of compiled-program keys).

    Attributes:
      epochs: Passes over the training set.
      batch_size: Batch size (the engine clips it to a smaller training set).
      peak_lr: Learning rate after warm-up (the constant rate for ``schedule="constant"``).
      warmup_epochs: Linear warm-up length, in epochs (may be fractional).
      schedule: "cosine", "linear" or "constant" (see :func:`jaxwm.engine.optim.lr_schedule`).
      optimizer: "sgd" (with momentum) or "adamw".
      momentum, nesterov: SGD momentum (0 disables it) and whether it is Nesterov's.
      weight_decay: Decoupled weight decay on kernels (``ndim > 1``) only.
      label_smoothing: Label smoothing of the cross-entropy.
      crop_pad, flip: Augmentation: random crop after reflect padding, horizontal flip.
      bn_mode: How stateful layers (BatchNorm) train, one of :data:`BN_MODES`:
        ``"inference"``: every layer in inference mode, all state kept (embedding on a tiny
        out-of-distribution trigger set); ``"trainable"``: batch statistics for the trainable
        layers, frozen layers in inference mode with their statistics restored; ``"all"``
        (PyTorch's ``model.train()``): every layer uses batch statistics and updates its
        running averages, frozen ones included (frozen *parameters* still never change).
      steps_per_call: Optimizer steps per compiled call of ``fit`` (0 = one epoch per call).
      eval_every, checkpoint_every: ``fit``'s evaluation and checkpoint periods, in epochs.
    """

    epochs: int
    batch_size: int
    peak_lr: float = 0.1
    warmup_epochs: float = 0.0
    schedule: str = "cosine"
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    crop_pad: int = 4
    flip: bool = True
    bn_mode: str = "trainable"
    steps_per_call: int = 0
    eval_every: int = 1
    checkpoint_every: int = 1


def optimizer_for(
    hp: Hparams, total_steps: int, *, steps_per_epoch: int = 0
) -> optax.GradientTransformation:
    """The optimizer and learning-rate schedule ``hp`` describes over ``total_steps`` steps.

    Args:
      hp: Hyper-parameters.
      total_steps: Length of the schedule in optimizer steps (clipped to >= 1).
      steps_per_epoch: Converts ``hp.warmup_epochs`` to steps (0: no warm-up).

    Returns:
      The (unmasked) optimizer; wrap it with :func:`jaxwm.engine.partition.masked` to freeze.
    """
    return optim.make_optimizer(
        peak_lr=hp.peak_lr,
        total_steps=max(int(total_steps), 1),
        warmup_steps=int(round(hp.warmup_epochs * steps_per_epoch)),
        schedule=hp.schedule,
        optimizer=hp.optimizer,
        momentum=hp.momentum,
        nesterov=hp.nesterov,
        weight_decay=hp.weight_decay,
    )


def learning_rate(hp: Hparams, total_steps: int, step: int, *, steps_per_epoch: int = 0) -> float:
    """The learning rate :func:`optimizer_for` applies at optimizer step ``step`` (0-based).

    Args:
      hp: Hyper-parameters.
      total_steps: The schedule's length, as given to :func:`optimizer_for`.
      step: The step.
      steps_per_epoch: As given to :func:`optimizer_for`.

    Returns:
      The rate, a Python float (what ``metrics.jsonl`` records per epoch).

    Example:
      >>> learning_rate(Hparams(peak_lr=0.1, schedule="constant"), 100, 5)
      0.1
    """
    schedule = optim.lr_schedule(
        hp.peak_lr,
        max(int(total_steps), 1),
        warmup_steps=int(round(hp.warmup_epochs * steps_per_epoch)),
        kind=hp.schedule,
    )
    return float(schedule(step))


def program_key(hp: Hparams, batch_size: int | None = None) -> Hparams:
    """``hp`` as a compiled-program key: what shapes the program, nothing else.

    The run length, peak rate and warm-up live in the optimizer state (:mod:`jaxwm.engine.optim`)
    and the periods are host-loop choices, so runs differing only in them share a program.

    Args:
      hp: Hyper-parameters.
      batch_size: The batch size actually used (after clipping to the set), if not ``hp``'s.
    """
    return dataclasses.replace(
        hp,
        epochs=1,
        peak_lr=1.0,
        warmup_epochs=0.0,
        batch_size=hp.batch_size if batch_size is None else int(batch_size),
        steps_per_call=0,
        eval_every=1,
        checkpoint_every=1,
    )
