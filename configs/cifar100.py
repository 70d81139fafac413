"""CIFAR-100 victim: ResNet18 trained from scratch (mode=train), the model the watermark protects.

Command:   python launch.py --config=configs/cifar100.py
           (No offline copy exists here: this needs tensorflow-datasets with internet (or folder:<ImageFolder of CIFAR-100>))
Runtime:   about 2-3 minutes on one H100/H200 (60 epochs).
Expected:  about 70-75% test accuracy (paper's victim: 74.34%); the model is saved to runs/cifar100/model.
"""

from jaxwm.config import preset


def get_config():
    return preset("cifar100")
