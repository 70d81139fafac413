"""Watermark pipeline on CIFAR-10: Table 1 row for CIFAR-10: train the victim, embed the watermark by partitioned embedding (Algorithm 1) AND by the full fine-tuning baseline from that same victim, verify all three.

Command:   JAXWM_SECRET=<your key> python launch.py --config=configs/cifar10_partitioned.py
           (Offline copy: add --config.data.source=folder:../shared/data/cifar10.tar.gz)
Runtime:   victim as configs/cifar10.py, plus under a minute per embedding on one H100/H200.
Expected:  results.json and table1.md in runs/cifar10_partitioned; paper (clean acc / retention):
           partitioned 86.54% / 83.41%, baseline 85.74% / 87.16%. Embedding runs at the
           default embed.operating_point=matched (2 clean images per trigger, stopped at 85%
           retention on D): training on the 100 triggers alone, the literal reading of the paper
           (--config.embed.operating_point=paper_literal), costs clean accuracy here.
           Measured (H200, bench/embed_grid.py, same embedding settings, 30-epoch victim at
           90.40%): partitioned 34.30% / 99%, baseline 18.84% / 97% on D alone; with
           2 clean images per trigger for all 60 epochs (operating_point=mixed):
           partitioned 82.82% / 99%, baseline 49.39% / 87%.
"""

from jaxwm.runner import presets


def get_config():
    return presets.table1_pipeline("cifar10")
