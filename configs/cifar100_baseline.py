"""Watermark pipeline on CIFAR-100, the full fine-tuning baseline alone (the paper's comparison).

Same settings as configs/cifar100_partitioned.py (which runs both methods from one victim), but
only the baseline, reusing that run's victim in runs/cifar100_partitioned/victim when it exists
(otherwise the victim is trained there).

Command:   JAXWM_SECRET=<your key> python launch.py --config=configs/cifar100_baseline.py
           (No offline copy exists here: this needs tensorflow-datasets with internet (or folder:<ImageFolder of CIFAR-100>))
Runtime:   the victim (if not there yet) plus under a minute of embedding on one H100/H200.
Expected:  results.json and table1.md in runs/cifar100_baseline; the baseline row of
           configs/cifar100_partitioned.py's docstring.
"""

from jaxwm.runner import presets


def get_config():
    return presets.table1_baseline("cifar100")
