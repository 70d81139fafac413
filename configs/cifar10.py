"""CIFAR-10 victim: ResNet18 trained from scratch (mode=train), the model the watermark protects.

Command:   python launch.py --config=configs/cifar10.py
           (Offline copy: add --config.data.source=folder:../shared/data/cifar10.tar.gz)
Runtime:   about 1-2 minutes on one H100/H200 (50 epochs, compile included; 59 s on an H200 at
           6e07658, bench/RESULTS.md); not practical on a CPU. Not re-measured at 0.2 (no GPU lent).
Expected:  >= 91% test accuracy on the JPEG-degraded offline copy (paper's victim: 87.48%); the model is saved to runs/cifar10/model.
"""

from jaxwm.runner.config import preset


def get_config():
    return preset("cifar10")
