"""CPU-sized MNIST study (no GPU needed): a small ResNet, the pipeline and the attack suite.

ResNet with stages (1, 1, 1) and widths (16, 32, 64) (0.2M parameters) on the full MNIST
offline copy; 100 abstract triggers embedded into layer2, layer3 and head (Algorithm 1), or
fine-tuning for the baseline; then every attack on both, as in the paper's Figures 2 and 3.

Command:   JAXWM_SECRET=<key> python launch.py --config=configs/mnist_small_cpu.py \
             --config.reproduce.runs="('mnist=folder:../shared/data/mnist.tar.gz',)"
Runtime:   measured at 9872eb6: 2,600 s wall (2,212 s user + 316 s system), with a second
           job (the deciding study) sharing the 2 cores the whole time: victim 3 epochs 559 s,
           embedding 35 s (partitioned) and 66 s (baseline), the 13 attacks on both 1,876 s;
           30 s of XLA compiling. Alone on the machine an earlier version took about 10 min
           (victim 153 s).
Expected:  (measured at 9872eb6, seed 0) victim 99.30%; partitioned 96.23% / 77% retention,
           baseline 94.25% / 91% (full test split; single runs vary a lot with the data order:
           four other keys on an earlier victim gave partitioned 96.43 +- 0.71% / 82.8 +- 4.5%,
           baseline 94.57 +- 1.83% / 93.5 +- 4.7%). Owned iff retention >= 21%: FTLL keeps both
           owned; one epoch of FTAL (lr 0.01, 5,000 attacker images) removes both at ~98.8%
           accuracy; RTLL removes partitioned (24% after 4 epochs, a WRT success from epoch 1)
           but not the baseline (59%); activation-frequency pruning loses ownership at ratio
           0.4 (partitioned) and 0.5 (baseline), where accuracy is already 24-27%; Liu
           fine-pruning removes both within 4 points.
"""

from jaxwm.runner import presets


def get_config():
    return presets.small_cpu()
