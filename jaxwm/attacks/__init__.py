"""Watermark-removal attacks on a stolen model, as pure functions over plain pytrees.

Every attack takes the model's functions (contract in :mod:`jaxwm.models`), its
``(params, state)``, the attacker's data (uint8 NHWC images, int32 labels, per-channel
``mean``/``std``) and a ``jax.random`` key, and returns a new ``(params, state)``; the same key
gives a bit-identical result. Only jax, optax and numpy are used (no Flax).

Fine-tuning (:mod:`.finetune`, :mod:`.adaptive`), after Adi et al. 2018, "Turning Your Weakness
Into a Strength: Watermarking Deep Neural Networks by Backdooring" (USENIX Security):

* :func:`ftll` / :func:`ftal` -- fine-tune the last layer / all layers;
* :func:`rtll` / :func:`rtal` -- re-initialise the last layer, then train it / all layers;
* :func:`finetune` (the general form), :func:`finetune_sweep` (a strength axis in epochs from
  one run: the paper's Figure 2);
* :func:`adaptive_finetune` -- an attacker who knows the partitioned scheme replays its gradual
  unfreezing (:func:`jaxwm.embed.unfrozen_per_epoch`, the same schedule) on clean data.

Pruning (:mod:`.prune`):

* :func:`activation_frequency`, :func:`frequency_keep_masks`, :func:`frequency_prune` --
  remove the least frequently active channels (the paper's Figure 3);
* :func:`fine_prune` -- fine-pruning after Liu et al. 2018, "Fine-Pruning: Defending Against
  Backdooring Attacks on Deep Neural Networks" (RAID): prune, then fine-tune;
* :func:`scope_units` -- which units those prune: block-internal (default), every conv output
  with the residual stream and stem, or the penultimate features;
* :func:`liu_fine_prune` (:mod:`.liu`) -- fine-pruning as Liu et al. run it: the last layer,
  least mean activation first, until clean accuracy drops by ``max_drop``; then fine-tune;
* :func:`magnitude_mask` (:mod:`.magnitude`) -- global unstructured weight pruning;
  :func:`apply_mask`, :func:`channel_masks_to_param_mask` turn masks into pruned parameters.

Perturbation (:mod:`.quantize`): :func:`quantize` (symmetric, per output channel) and
:func:`gaussian_noise`.

Extraction (:mod:`.distill`): :func:`distill` trains a fresh student on the teacher's soft or
hard outputs over unlabelled attacker images.

Together these cover the removal attacks of the Watermark-Robustness-Toolbox (Lukas et al. 2022,
"SoK: How Robust is Image Classification Deep Neural Network Watermarking?", IEEE S&P) that act
on the model; input preprocessing is a property of the verifier's queries and lives elsewhere.

Overwriting (the attacker embeds its own watermark with the partitioned method) needs no
function of its own: it is :func:`jaxwm.embed.partitioned_embed` with the attacker's key and
trigger set, as ``launch.py`` mode ``attack`` runs it (:mod:`jaxwm.runner.attack_runs`).

Example:
  >>> from jaxwm import attacks
  >>> p, s = attacks.ftal(model.apply, params, state, x_u8, y, mean=m, std=sd,
  ...                     key=jax.random.key(0), epochs=5, lr=0.01)
  >>> p, mask = attacks.frequency_prune(model.activations, model.prunable, params, state, x_u8,
  ...                                   mean=m, std=sd, ratio=0.5)
"""

from jaxwm.attacks.adaptive import adaptive_finetune
from jaxwm.attacks.distill import distill, make_distill_step
from jaxwm.attacks.finetune import finetune, finetune_sweep, ftal, ftll, rtal, rtll
from jaxwm.attacks.liu import default_layer, liu_fine_prune, liu_prune
from jaxwm.attacks.magnitude import apply_mask, magnitude_mask
from jaxwm.attacks.prune import (
    RANKINGS,
    SCOPES,
    activation_frequency,
    channel_masks_to_param_mask,
    fine_prune,
    frequency_keep_masks,
    frequency_prune,
    mean_activation,
    scope_units,
)
from jaxwm.attacks.quantize import gaussian_noise, quantize

__all__ = [
    "RANKINGS",
    "SCOPES",
    "activation_frequency",
    "adaptive_finetune",
    "apply_mask",
    "channel_masks_to_param_mask",
    "default_layer",
    "distill",
    "fine_prune",
    "finetune",
    "finetune_sweep",
    "frequency_keep_masks",
    "frequency_prune",
    "ftal",
    "ftll",
    "gaussian_noise",
    "liu_fine_prune",
    "liu_prune",
    "magnitude_mask",
    "make_distill_step",
    "mean_activation",
    "quantize",
    "rtal",
    "rtll",
    "scope_units",
]
