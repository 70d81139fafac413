"""Adi et al.'s fine-tuning attack settings on the demo pipeline (FTLL/FTAL/RTLL/RTAL).

Adi et al. 2018 (USENIX Security; reference code WatermarkNN, ``fine-tune.py``) fine-tune the
stolen model on the *training set* for 20 epochs with SGD at lr 0.01 (momentum 0.9, weight decay
5e-4, batch 100, no schedule). This preset runs the four variants that way on ``runs/demo``:
``attack.data_split="train"`` with the whole training split (``data_fraction=1``), SGD 0.01,
strengths up to 20 epochs; clean accuracy is measured on the whole test split (disjoint from
the attacker's data). RTLL/RTAL records carry ``retention_owner_head``, the retention through
the owner's original head as Adi et al. measure it, beside ``retention`` (the attacker's head).
Departures: jaxwm's SGD is Nesterov, batch 32 here (the digits training split has 1438
images), and the model is the demo's small ResNet, not Adi's ResNet-18 on CIFAR-10.

Command:   python launch.py --config=configs/demo_attack_adi.py
           (run python launch.py --config=configs/demo.py first: it writes runs/demo)
Runtime:   111 s wall at 9872eb6 (77 s user; after the demo pipeline, 30 s), on 2 CPU cores
           shared with one other job.
Expected:  (measured at 9872eb6, seed 0; the attacker trains on all 1438 training images,
           accuracy on the 359 test images) unattacked: partitioned 96.1% / 94% retention,
           baseline 96.4% / 94%. After 20 epochs every attacked model is at 98-99% accuracy.
           FTLL leaves partitioned 74% / baseline 80% retention (both owned); FTAL 38% (owned)
           / 26% (not owned from epoch 1, a WRT success). RTLL with the attacker's head: 48% /
           70% (owned); RTAL: 12% / 20% (not owned, a WRT success from 1 epoch). Through the
           owner's head (retention_owner_head, Adi et al.'s measure): RTLL 94% / 94% (the
           features are untouched), RTAL 38% / 18%.
"""

from jaxwm.runner import presets


def get_config():
    c = presets.demo()  # the pipeline's data, model, watermark and embed fields, unchanged
    c.mode = "attack"
    c.attack.source = "runs/demo"
    c.attack.kinds = ("ftll", "ftal", "rtll", "rtal")
    c.attack.data_split = "train"
    c.attack.data_fraction = 1.0  # Adi et al.'s attacker has the whole training set
    c.attack.ft_epochs = (0, 1, 2, 5, 10, 20)
    c.attack.ft_lr = 0.01
    c.attack.batch_size = 32
    return c
