"""CPU-sized CIFAR-10 study (no GPU needed): a small ResNet, the pipeline and the attack suite.

ResNet with stages (1, 1, 1) and widths (16, 32, 64) (0.2M parameters) on the full CIFAR-10 (JPEG-degraded)
offline copy; 100 abstract triggers embedded into layer2, layer3 and head (Algorithm 1), or
fine-tuning for the baseline; then every attack on both, as in the paper's Figures 2 and 3.

Command:   JAXWM_SECRET=<key> python launch.py --config=configs/cifar10_small_cpu.py \
             --config.reproduce.runs="('cifar10=folder:../shared/data/cifar10.tar.gz',)"
Runtime:   about 15 minutes on 2 CPU cores (measured: victim 367 s; pipeline + attacks 555 s).
Expected:  (measured, seed 0) victim 75.64%; partitioned 60.44% / 90% retention, baseline
           55.72% / 89% (an earlier run of the same algorithm, another data order: 55.60% / 90%
           and 57.66% / 95%): this 0.2M-parameter model loses 15-20 points to the watermark even
           with clean images mixed in. Owned iff retention >= 21%: 4 epochs of FTAL leave both
           owned (28% / 35%) while accuracy recovers to ~71%; RTAL removes both; fine-pruning
           removes the partitioned watermark at ratio 0.4 and the baseline's at 0.5.
"""

from jaxwm.runner import presets


def get_config():
    c = presets.small_cpu()
    c.reproduce.runs = ("cifar10=tfds:cifar10",)
    c.train.epochs = 6
    c.train.crop_pad = 4
    c.train.flip = True
    c.train.label_smoothing = 0.1
    return c
