"""Quick demo of the whole method on the embedded handwritten digits (no dataset, no internet).

Trains a small victim ResNet, derives a 50-image abstract watermark set from a demo secret,
embeds it with partitioned embedding (Algorithm 1) and with the full fine-tuning baseline, and
verifies all three models; writes results.json and table1.md to runs/demo.

Command:   python launch.py --config=configs/demo.py
Runtime:   measured at commit 72c54f1: 150 s wall on 2 CPU cores shared with other jobs (load
           average 14; the victim's 15 epochs 80 s of it); an idle machine is several times
           faster. Digits: 1438 train / 359 test, 8x8.
Expected:  (measured at 72c54f1, seed 0; clean accuracy on the full 359-image test split)
           victim 97.77% accuracy, 8% retention (chance 10%), not owned; partitioned 95.82%
           and baseline 93.59% accuracy, both 100% retention with p < 1e-35 (owned). The demo
           mixes two clean images per trigger into embedding (embed.clean_per_trigger=2): on
           this 0.2M-parameter model, training on the watermark set alone costs about 20
           points of accuracy.
"""

from jaxwm.runner import presets


def get_config():
    return presets.demo()
