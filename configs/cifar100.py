"""CIFAR-100 victim: ResNet18 trained from scratch (mode=train), the model the watermark protects.

Command:   python launch.py --config=configs/cifar100.py
           (No offline copy exists here: this needs tensorflow-datasets with internet (or folder:<ImageFolder of CIFAR-100>))
Runtime:   not measured (no CIFAR-100 copy here); CIFAR-10 at 50 epochs took 59 s on an H200.
Expected:  not measured; the paper's victim reached 74.34%; the model is saved to runs/cifar100/model.
"""

from jaxwm.runner.config import preset


def get_config():
    return preset("cifar100")
