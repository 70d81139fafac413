"""Control sets for a content rank test on an MNIST-sized pool: `controls.control_sets` (one source
hash, via `triggers.make_trigger_sets`) against one `make_trigger_set` per key (one hash per set,
as before 9872eb6), timed in the same process; checks both give the same sets.

    JAX_PLATFORMS=cpu python bench/control_sets.py [COUNT]   # default 100; the study draws 1000

Prints one JSON line: seconds for each way, the speed-up, the pool and the count.
"""

import json
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout

from jaxwm import controls, triggers  # noqa: E402


def main(count: int) -> dict:
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, (60000, 28, 28, 1), dtype=np.uint8)  # MNIST's training split
    lab = rng.integers(0, 10, 60000)
    secret = triggers.generate_secret()
    kw = dict(size=100, image_shape=(28, 28, 1), num_classes=10, label_policy="target",
              source_images=src, source_labels=lab)  # fmt: skip
    owner = triggers.make_trigger_set("content", secret=secret, **kw)
    t = time.perf_counter()
    new = controls.control_sets(
        owner.params, secret, count=count, source_images=src, source_labels=lab
    )
    one_hash = time.perf_counter() - t
    t = time.perf_counter()
    old = [
        triggers.make_trigger_set("content", secret=controls.control_secret(secret, j), **kw)
        for j in range(count)
    ]
    per_set = time.perf_counter() - t
    for a, b in zip(new, old, strict=True):
        assert a.params == b.params and np.array_equal(a.images, b.images), "sets differ"
    return {"what": "control_sets", "count": count, "pool": list(src.shape),
            "per_set_hash_s": round(per_set, 2), "one_hash_s": round(one_hash, 2),
            "speedup": round(per_set / one_hash, 1)}  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)))
