"""The deciding study of claims C1-C4 on CIFAR-10 with the paper's ResNet18, for one GPU.

The paper-scale CIFAR-10 preset (ResNet18 of 11.2M parameters, bfloat16; victims on the
50-epoch schedule of configs/cifar10.py; 100 abstract triggers with random labels embedded into
``layer4`` and ``head`` by AdamW 1e-4 in batches of 20 for up to 60 epochs, BatchNorm in
inference mode unless a cell says otherwise) on the offline CIFAR-10 copy (JPEG-degraded).
Seven cells at 3 victim seeds x 3 watermark keys (n = 9 paired units each); the verdict cell
(early stop at 85% retention) comes first and is attacked with FTLL, FTAL, RTLL, RTAL (0-8
epochs on the attacker's 5,000 test images), activation-frequency pruning (ratios 0-0.9) and
fine-pruning (4 ratios). Writes STUDY.md; rerunning resumes.

Why these settings: the attacks run on units whose partitioned model lost at most 10 points
(``study.attack_max_drop``; 5 would have skipped most ResNet18 units, which lose 3-6 points
at the early stop); fine-pruning at 4 ratios because it decides no claim. ``content_target``
is left out (not measured at this scale).

Command:   JAXWM_SECRET=<key> python launch.py --config=configs/study_cifar10_resnet18.py \\
             --workdir=runs/study_cifar10_resnet18
GPU copy:  bash bench/gpu_session.sh study  (the same grid, data carried in .gpu/, time-boxed)
Runtime:   measured at 4e27363 on one NVIDIA H200 (jax 0.11.2), as four time-boxed
           invocations of this grid on one workdir (each resumed the last): 59 of the 63 units
           finished (large_d 5 of 9) in 11.1 min of unit wall time, victims included (each
           victim 32-33 s, the first 67 s with its compilation; 77 s of XLA compilation in the
           first invocation); attacked units 21-54 s after the first (132 s with victim and
           compilation), other units 3-8 s. So about 12 minutes for the whole grid.
Expected:  victims 91.10% [90.96, 91.24]; verdict cell partitioned 86.60% / 90.9% retention,
           baseline 75.17% / 91.1% (both stopped by the early stop, which overshoots 85%);
           C1 inconclusive (drop 4.50 [3.18, 5.82] points, retention 5.9 points above 85%), C2
           refuted (partitioned loses its watermark to weaker fine-tuning, 0 wins / 9 losses),
           C3 inconclusive (7 of 9), C4 confirmed (+11.43 [+6.69, +16.18] points, 9/0).
           Evidence: bench/data/2026-12-04-h200-study/ (README "The deciding study").
"""

from jaxwm.runner.config import preset

CELLS = (
    "early_stop_0.85: embed.operating_point='matched'",
    "d_alone: embed.operating_point='paper_literal'",
    "mixed_2: embed.operating_point='mixed'",
    "bn_trainable: embed.operating_point='matched'; embed.bn_mode='trainable'",
    "mixed_10: embed.operating_point='mixed'; embed.clean_per_trigger=10; embed.epochs=15",
    "bn_all: embed.operating_point='matched'; embed.bn_mode='all'",
    "large_d: embed.operating_point='matched'; watermark.size=1000; embed.epochs=6",
)


def get_config():
    c = preset("cifar10")
    c.mode = "study"
    c.data.source = "folder:../shared/data/cifar10.tar.gz"  # the offline copy
    c.study.cells = CELLS
    c.study.verdict_cell = "early_stop_0.85"
    c.study.attack_cells = ("early_stop_0.85",)
    c.study.attack_max_drop = 0.1
    c.attack.fine_prune_ratios = (0.1, 0.3, 0.5, 0.7)
    return c
