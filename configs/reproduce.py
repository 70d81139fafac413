"""The paper's whole study in one command: MNIST, CIFAR-10, CIFAR-100 x {partitioned, baseline} x attacks.

Command:   JAXWM_SECRET=<key> python launch.py --config=configs/reproduce.py \
             --config.reproduce.runs="('mnist=folder:../shared/data/mnist.tar.gz','cifar10=folder:../shared/data/cifar10.tar.gz','cifar100=tfds:cifar100')"
           (default sources are tfds:...; an entry whose data is unavailable is reported as skipped)
           Several GPUs: add --config.reproduce.processes=0 (one (dataset, seed) process per GPU).
Runtime:   not measured end to end yet. From the parts measured on one H200 (bench/RESULTS.md):
           victims ~1 min each, embedding ~15 s per method, plus the attack suite.
Expected:  runs/reproduce/REPORT.md with Table 1 (mean ± std over reproduce.seeds) beside the
           paper's figures, the attack table and the Figure 2/3 analogues per dataset.
"""

from jaxwm.runner.config import defaults


def get_config():
    c = defaults()
    c.mode = "reproduce"
    c.reproduce.seeds = (0,)
    c.attack.ft_epochs = (0, 1, 2, 5, 10)
    c.attack.distill_epochs = (10,)
    c.attack.overwrite_epochs = (30,)
    return c
