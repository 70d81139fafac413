"""The deciding study of claims C1-C4 on CIFAR-10 with a small ResNet, on CPUs (mode ``study``).

The small ResNet of configs/cifar10_small_cpu.py (stages (1, 1, 1), widths (16, 32, 64)) on the
offline CIFAR-10 copy (JPEG-degraded), with the grid, embedding and attack settings of
configs/study_mnist.py (``presets.study_cpu``: eight cells, 3 victim seeds x 3 watermark keys,
paired methods, attacks on the verdict cell). The victim trains as in cifar10_small_cpu.py.
Writes STUDY.md; rerunning resumes.

Command:   JAXWM_SECRET=<key> python launch.py --config=configs/study_cifar10_small.py \
             --workdir=runs/study_cifar10_small
Runtime:   not measured. Expect several hours on 2 CPU cores: each victim takes about 6
           minutes (the 6-epoch victim of configs/cifar10_small_cpu.py took 367 s), and the
           72 units cost at least what the MNIST study's do (README "The deciding study").
Expected:  not measured. Whether 60 embedding epochs reach the early stop's 85% on CIFAR-10 is
           unknown: check the "embedding epochs" column of STUDY.md (60 = never stopped).
"""

from jaxwm.runner import presets


def get_config():
    c = presets.study_cpu()
    c.data.source = "folder:../shared/data/cifar10.tar.gz"  # the offline copy
    c.train.epochs = 6
    c.train.crop_pad = 4
    c.train.flip = True
    c.train.label_smoothing = 0.1
    # Pruning on this harder task: a coarser tail as well (the MNIST ratios stop at 0.1).
    c.attack.prune_ratios = (0.0, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)
    return c
