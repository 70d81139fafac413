"""MNIST victim: ResNet18 trained from scratch (mode=train), the model the watermark protects.

Command:   python launch.py --config=configs/mnist.py
           (Offline copy: add --config.data.source=folder:../shared/data/mnist.tar.gz)
Runtime:   about 1 minute on one H100/H200 (8 epochs; compile included); hours on a CPU.
           Quick CPU check (float32 is used on CPU): --config.train.epochs=1
           --config.model.widths="(8,16,32,64)" takes about a minute on 2 cores (measured 58 s,
           93.38% test accuracy).
Expected:  about 99.5% test accuracy (GPU figures of 0.1; the CPU check measured at 1ebd21b); the model is saved to runs/mnist/model.
"""

from jaxwm.runner.config import preset


def get_config():
    return preset("mnist")
