"""Watermark pipeline on CIFAR-100: Table 1 row for CIFAR-100: train the victim, embed the watermark by partitioned embedding (Algorithm 1) AND by the full fine-tuning baseline from that same victim, verify all three.

Command:   JAXWM_SECRET=<your key> python launch.py --config=configs/cifar100_partitioned.py
           (No offline copy exists here: this needs tensorflow-datasets with internet (or folder:<ImageFolder of CIFAR-100>))
Runtime:   victim as configs/cifar100.py, plus under a minute per embedding on one H100/H200.
Expected:  results.json and table1.md in runs/cifar100_partitioned; paper (clean acc / retention):
           partitioned 72.83% / 25.07%, baseline 54.12% / 25.74%. Embedding runs at the
           default embed.operating_point=matched (2 clean images per trigger, stopped at 85%
           retention on D): training on the 100 triggers alone, the literal reading of the paper
           (--config.embed.operating_point=paper_literal), costs clean accuracy here.
           Not measured (no CIFAR-100 copy reachable here).
"""

from jaxwm.runner import presets


def get_config():
    return presets.table1_pipeline("cifar100")
