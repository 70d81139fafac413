"""Quick demo: a small ResNet on the embedded handwritten digits (no dataset, no internet).

Command:   python launch.py --config=configs/demo.py
Runtime:   about 1-2 minutes on 2 CPU cores (scikit-learn digits, 1437 train / 360 test, 8x8).
Expected:  test accuracy of about 97% (printed at the end; saved in runs/demo/results.json).
"""

from jaxwm.config import defaults


def get_config():
    c = defaults()
    c.data.source = "digits"
    c.model.stage_sizes = (1, 1, 1)
    c.model.widths = (16, 32, 64)
    c.train.epochs = 15
    c.train.batch_size = 64
    c.train.peak_lr = 0.05
    c.train.crop_pad = 1
    c.train.flip = False  # digits are not mirror-symmetric
    c.train.steps_per_call = 11
    return c
