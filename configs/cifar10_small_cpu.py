"""CPU-sized CIFAR-10 study (no GPU needed): a small ResNet, the pipeline and the attack suite.

ResNet with stages (1, 1, 1) and widths (16, 32, 64) (0.2M parameters) on the full CIFAR-10 (JPEG-degraded)
offline copy; 100 abstract triggers embedded into layer2, layer3 and head (Algorithm 1), or
fine-tuning for the baseline; then every attack on both, as in the paper's Figures 2 and 3.

Command:   JAXWM_SECRET=<key> python launch.py --config=configs/cifar10_small_cpu.py \
             --config.reproduce.runs="('cifar10=folder:../shared/data/cifar10.tar.gz',)"
Runtime:   about 10-15 minutes on 2 CPU cores (victim 6 epochs; attacks on 5,000 test images).
Expected:  REPORT.md in runs/cifar10_small_cpu; see the closing note of the attack issue for the
           measured table (victim ~80%; both schemes owned before attacks).
"""

import importlib.util
from pathlib import Path


def get_config():
    path = Path(__file__).with_name("mnist_small_cpu.py")
    spec = importlib.util.spec_from_file_location("mnist_small_cpu", path)
    mnist = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mnist)
    c = mnist.get_config()
    c.reproduce.runs = ("cifar10=tfds:cifar10",)
    c.train.epochs = 6
    c.train.crop_pad = 4
    c.train.flip = True
    c.train.label_smoothing = 0.1
    return c
