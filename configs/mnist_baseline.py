"""Watermark pipeline on MNIST, the full fine-tuning baseline alone (the paper's comparison).

Same settings as configs/mnist_partitioned.py (which runs both methods from one victim), but
only the baseline, reusing that run's victim in runs/mnist_partitioned/victim when it exists
(otherwise the victim is trained there).

Command:   JAXWM_SECRET=<your key> python launch.py --config=configs/mnist_baseline.py
           (Offline copy: add --config.data.source=folder:../shared/data/mnist.tar.gz)
Runtime:   the victim (if not there yet) plus under a minute of embedding on one H100/H200.
Expected:  results.json and table1.md in runs/mnist_baseline; the baseline row of
           configs/mnist_partitioned.py's docstring.
"""

import importlib.util
from pathlib import Path


def get_config():
    path = Path(__file__).with_name("mnist_partitioned.py")
    spec = importlib.util.spec_from_file_location("mnist_partitioned", path)
    partitioned = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(partitioned)
    c = partitioned.get_config()
    c.pipeline.methods = ("baseline",)
    c.pipeline.victim = "runs/mnist_partitioned/victim"
    return c
