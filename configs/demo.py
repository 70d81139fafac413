"""Quick demo of the whole method on the embedded handwritten digits (no dataset, no internet).

Trains a small victim ResNet, derives a 50-image abstract watermark set from a demo secret,
embeds it with partitioned embedding (Algorithm 1) and with the full fine-tuning baseline, and
verifies all three models; writes results.json and table1.md to runs/demo.

Command:   python launch.py --config=configs/demo.py
Runtime:   about 1-2 minutes on 2 CPU cores (scikit-learn digits: 1438 train / 359 test, 8x8).
Expected:  victim about 97% test accuracy and about 10% retention (chance), not owned;
           partitioned and baseline above 90% retention with p < 1e-3 (owned), at a clean
           accuracy within a few points of the victim. The demo mixes two clean images per
           trigger into embedding (embed.clean_per_trigger=2): on this 0.2M-parameter model,
           training on the watermark set alone costs about 20 points of accuracy.
"""

from jaxwm.runner import presets


def get_config():
    return presets.demo()
