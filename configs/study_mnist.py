"""The deciding study of claims C1-C4 on MNIST, sized for 2 CPU cores (mode ``study``).

The small ResNet of configs/mnist_small_cpu.py (stages (1, 1, 1), widths (16, 32, 64), 0.2M
parameters) on the offline MNIST copy; the default grid of ``study.cells`` (D alone, mixed 2,
mixed 10, early stop at 85% retention, trainable BatchNorm statistics, |D| = 1,000,
content triggers with one target label) at 3 victim seeds x 3 watermark keys, both methods from
the same victim with the same key; then FTLL, FTAL, RTLL, RTAL, activation-frequency pruning and
fine-pruning on every unit whose partitioned model lost at most 5 points. Writes STUDY.md.
Rerunning the same command resumes (finished units are skipped).

Command:   JAXWM_SECRET=<key> python launch.py --config=configs/study_mnist.py \
             --workdir=runs/study_mnist
Smaller:   add --config.study.seeds="(0,)" --config.study.num_keys=1 \
             --config.study.cells="('mixed_2: embed.clean_per_trigger=2',
             'early_stop_0.85: embed.clean_per_trigger=2; embed.target_retention=0.85')"
Runtime:   target <= 60 minutes on 2 CPU cores; the whole grid is not measured yet. The smaller
           command above (1 seed, 1 key, 2 cells) is measured in README "The deciding study".
Expected:  not measured yet.
"""

from jaxwm.runner import presets


def get_config():
    c = presets.small_cpu()
    c.mode = "study"
    c.data.source = "folder:../shared/data/mnist.tar.gz"  # the offline copy (shared/data/README.md)
    c.train.epochs = 2  # one victim per seed; 3 epochs gave 99.31% (configs/mnist_small_cpu.py)
    c.embed.epochs = 30
    # Lighter attacks than mode attack's defaults: 63 units must fit the hour.
    c.attack.data_fraction = 0.2  # 2,000 attacker images, 8,000 to evaluate
    c.attack.ft_epochs = (0, 1, 2)
    c.attack.prune_ratios = (0.0, 0.2, 0.4, 0.6, 0.8)
    c.attack.fine_prune_epochs = 1
    return c
