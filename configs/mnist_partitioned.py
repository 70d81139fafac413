"""Watermark pipeline on MNIST: Table 1 row for MNIST: train the victim, embed the watermark by partitioned embedding (Algorithm 1) AND by the full fine-tuning baseline from that same victim, verify all three.

Command:   JAXWM_SECRET=<your key> python launch.py --config=configs/mnist_partitioned.py
           (Offline copy: add --config.data.source=folder:../shared/data/mnist.tar.gz)
Runtime:   victim as configs/mnist.py, plus under a minute per embedding on one H100/H200.
Expected:  results.json and table1.md in runs/mnist_partitioned; paper (clean acc / retention):
           partitioned 99.47% / 86.67%, baseline 99.03% / 87.83%. Embedding runs at the
           default embed.operating_point=matched (2 clean images per trigger, stopped at 85%
           retention on D): training on the 100 triggers alone, the literal reading of the paper
           (--config.embed.operating_point=paper_literal), costs clean accuracy here.
           Measured (H200, bench/embed_grid.py, same embedding settings, 4-epoch victim at
           99.68%): partitioned 55.46% / 97%, baseline 16.08% / 97% on D alone; with
           2 clean images per trigger for all 60 epochs (operating_point=mixed):
           partitioned 98.90% / 99%, baseline 96.97% / 100%.
"""

from jaxwm.runner import presets


def get_config():
    return presets.table1_pipeline("mnist")
