"""The deciding study of claims C1-C4 on CIFAR-10 with a small ResNet, on CPUs (mode ``study``).

The small ResNet of configs/cifar10_small_cpu.py (stages (1, 1, 1), widths (16, 32, 64)) on the
offline CIFAR-10 copy (JPEG-degraded); the default grid of ``study.cells`` at 3 victim seeds x
3 watermark keys, paired methods, then the six attacks of ``study.attack_kinds`` on units whose
partitioned model lost at most 5 points. Writes STUDY.md; rerunning resumes.

Command:   JAXWM_SECRET=<key> python launch.py --config=configs/study_cifar10_small.py \
             --workdir=runs/study_cifar10_small
Runtime:   not measured yet (several hours on 2 CPU cores: the victim alone took 367 s in
           configs/cifar10_small_cpu.py).
Expected:  not measured yet.
"""

from jaxwm.runner import presets


def get_config():
    c = presets.small_cpu()
    c.mode = "study"
    c.data.source = "folder:../shared/data/cifar10.tar.gz"  # the offline copy
    c.train.epochs = 6
    c.train.crop_pad = 4
    c.train.flip = True
    c.train.label_smoothing = 0.1
    c.embed.epochs = 30
    c.attack.data_fraction = 0.2
    c.attack.ft_epochs = (0, 1, 2, 4)
    c.attack.prune_ratios = (0.0, 0.2, 0.4, 0.6, 0.8)
    c.attack.fine_prune_epochs = 1
    return c
