"""MNIST victim: ResNet18 trained from scratch (mode=train), the model the watermark protects.

Command:   python launch.py --config=configs/mnist.py
           (Offline copy: add --config.data.source=folder:../shared/data/mnist.tar.gz)
Runtime:   about 1 minute on one H100/H200 (8 epochs; compile included); hours on a CPU.
Expected:  about 99.5% test accuracy; the model is saved to runs/mnist/model.
"""

from jaxwm.config import preset


def get_config():
    return preset("mnist")
