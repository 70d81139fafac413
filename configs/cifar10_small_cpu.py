"""CPU-sized CIFAR-10 study (no GPU needed): a small ResNet, the pipeline and the attack suite.

ResNet with stages (1, 1, 1) and widths (16, 32, 64) (0.2M parameters) on the full CIFAR-10 (JPEG-degraded)
offline copy; 100 abstract triggers embedded into layer2, layer3 and head (Algorithm 1), or
fine-tuning for the baseline; then every attack on both, as in the paper's Figures 2 and 3.

Command:   JAXWM_SECRET=<key> python launch.py --config=configs/cifar10_small_cpu.py \
             --config.reproduce.runs="('cifar10=folder:../shared/data/cifar10.tar.gz',)"
Runtime:   measured at 9872eb6: 3,119 s wall (3,156 s user + 455 s system) on 2 CPU cores
           shared with other jobs most of the time: victim 6 epochs 1,203 s, embedding 45 s
           (partitioned) and 147 s (baseline), the 13 attacks on both 1,648 s. Alone on the
           machine 0.1 took about 15 minutes (victim 367 s).
Expected:  (measured at 9872eb6, seed 0) victim 75.69%; partitioned 60.21% / 92% retention,
           baseline 52.58% / 99% (full test split): this 0.2M-parameter model loses 15-23
           points to the watermark even with clean images mixed in. Owned iff retention >= 21%:
           4 epochs of FTAL leave both owned (38% / 44%) while accuracy recovers to ~71%; RTAL
           removes both (a WRT success from 1 epoch), RTLL removes only partitioned (20% vs
           55%); fine-pruning removes partitioned at ratio 0.6 and the baseline at 0.5.
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
