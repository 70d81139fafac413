"""CPU-sized MNIST study (no GPU needed): a small ResNet, the pipeline and the attack suite.

ResNet with stages (1, 1, 1) and widths (16, 32, 64) (0.2M parameters) on the full MNIST
offline copy; 100 abstract triggers embedded into layer2, layer3 and head (Algorithm 1), or
fine-tuning for the baseline; then every attack on both, as in the paper's Figures 2 and 3.

Command:   JAXWM_SECRET=<key> python launch.py --config=configs/mnist_small_cpu.py \
             --config.reproduce.runs="('mnist=folder:../shared/data/mnist.tar.gz',)"
Runtime:   about 10 minutes on 2 CPU cores (measured: victim 153 s; pipeline + attacks about
           400 s).
Expected:  (measured, seed 0) victim 99.31%. Embedding varies a lot with the data order: this
           run gave partitioned 94.86% / 60% retention and baseline 92.96% / 80% (clean accuracy
           / retention); four other embedding keys on the same victim gave partitioned
           96.43 ± 0.71% / 82.8 ± 4.5% and baseline 94.57 ± 1.83% / 93.5 ± 4.7% (n=4). Owned
           iff retention >= 21%: FTLL keeps both owned; one epoch of FTAL (lr 0.01, 5,000
           attacker images) removes both at ~98% accuracy; activation-frequency pruning loses
           ownership at ratio 0.5 for both. See the closing note of the attack issue.
"""

from jaxwm.runner import presets


def get_config():
    return presets.small_cpu()
