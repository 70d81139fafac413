"""Quick demo of the whole method on the embedded handwritten digits (no dataset, no internet).

Trains a small victim ResNet, derives a 50-image abstract watermark set from a demo secret,
embeds it with partitioned embedding (Algorithm 1) and with the full fine-tuning baseline, and
verifies all three models; writes results.json and table1.md to runs/demo.

Command:   python launch.py --config=configs/demo.py
Runtime:   measured at b583355 on the idle 2-core machine: 48 s wall without a compile cache
           (--config.compile_cache=, 26 s of it compiling), 29 s with the default cache warm.
           Digits shipped in the package: 1438 train / 359 test, 8x8. Accuracies are on the
           full test split.
Expected:  (measured) victim 97.77% test accuracy and 8% retention (chance 10%), not owned;
           embedding at the default embed.operating_point=matched (two clean images mixed in
           per trigger, stopped at 85% retention on D): partitioned 96.10% / 94%, baseline
           96.38% / 94% (clean accuracy / retention), both owned with p < 1e-28. On the
           watermark set alone (--config.embed.operating_point=paper_literal, the paper's
           literal reading) this 0.2M-parameter model falls to 64.90% / 80% and 49.03% / 82%.
"""

from jaxwm.runner import presets


def get_config():
    return presets.demo()
