"""The deciding study of claims C1-C4 on CIFAR-10 with the paper's ResNet18, for one GPU.

The paper-scale CIFAR-10 preset (ResNet18, bfloat16, the victim's schedule of
configs/cifar10.py; 100 abstract triggers into layer4 and head) with the default grid of
``study.cells`` at 3 victim seeds x 3 watermark keys, paired methods, then the six attacks of
``study.attack_kinds`` at mode attack's default strengths on units whose partitioned model lost at
most 5 points. Writes STUDY.md; rerunning resumes.

Command:   JAXWM_SECRET=<key> python launch.py --config=configs/study_cifar10_resnet18.py \
             --workdir=runs/study_cifar10_resnet18
Runtime:   not measured yet.
Expected:  not measured yet.
"""

from jaxwm.runner.config import preset


def get_config():
    c = preset("cifar10")
    c.mode = "study"
    c.data.source = "folder:../shared/data/cifar10.tar.gz"  # the offline copy
    return c
