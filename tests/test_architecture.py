"""Architecture guarantees: the algorithms never need Flax (only jaxwm.models imports it)."""

import subprocess
import sys

ALGORITHMS = [
    "jaxwm.engine.partition", "jaxwm.engine.train", "jaxwm.engine.loop", "jaxwm.embed", "jaxwm.verify",
    "jaxwm.triggers", "jaxwm.manifest", "jaxwm.attacks", "jaxwm.engine.parallel", "jaxwm.engine.sweep",
    "jaxwm.engine.checkpoint", "jaxwm.data",
]  # fmt: skip


def test_algorithm_modules_do_not_import_flax():
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in ALGORITHMS)
        + "print(sorted(m for m in sys.modules if m == 'flax' or m.startswith('flax.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"JAX_PLATFORMS": "cpu", "PATH": ""},
    )  # fmt: skip
    assert out.stdout.strip() == "[]", out.stdout
