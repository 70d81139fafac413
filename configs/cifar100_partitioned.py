"""Watermark pipeline on CIFAR-100: Table 1 row for CIFAR-100: train the victim, embed the watermark by partitioned embedding (Algorithm 1) AND by the full fine-tuning baseline from that same victim, verify all three.

Command:   JAXWM_SECRET=<your key> python launch.py --config=configs/cifar100_partitioned.py
           (No offline copy exists here: this needs tensorflow-datasets with internet (or folder:<ImageFolder of CIFAR-100>))
Runtime:   victim as configs/cifar100.py, plus under a minute per embedding on one H100/H200.
Expected:  results.json and table1.md in runs/cifar100_partitioned; paper (clean acc / retention):
           partitioned 72.83% / 25.07%, baseline 54.12% / 25.74%. Training on the 100 triggers alone
           (embed.clean_per_trigger=0, the paper's setting) costs clean accuracy here; set
           --config.embed.clean_per_trigger=2 to mix clean images into every epoch.
           Not measured (no CIFAR-100 copy reachable here).
"""

from jaxwm.runner import presets


def get_config():
    return presets.table1_pipeline("cifar100")
