"""The wheel: every subpackage and the configs ship, and `jaxwm --config=demo` runs installed.

The install test builds the wheel offline, installs it into a fresh venv without dependencies,
lends that venv the dev environment's site-packages for JAX & co. (a .pth file, which adds the
folder to sys.path without running its own .pth files, so the dev checkout's editable jaxwm is
not imported), and runs the console script in an empty directory. scripts/check_wheel.sh does
the same with the real dependencies from the package index (a release check, not a test).
"""

import importlib.metadata
import json
import os
import shutil
import site
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--config=demo",
    "--config.mode=train",  # the pipeline compiles for a minute; train shows the same install
    "--config.train.epochs=1",
    "--config.model.stage_sizes=(1,1)",
    "--config.model.widths=(4,8)",
    "--config.progress=False",
]


def test_the_package_list_holds_every_subpackage_and_the_configs():
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "jaxwm").rglob("__init__.py")
    }
    assert set(setup["packages"]) == found | {"jaxwm.configs"}, "update pyproject's packages"
    assert setup["package-dir"] == {"jaxwm.configs": "configs"}


def _setuptools_major() -> int:
    try:
        return int(importlib.metadata.version("setuptools").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        return 0


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{cmd[:4]} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.skipif(
    _setuptools_major() < 77,
    reason="the dev venv predates [dev]'s setuptools>=77: re-run `make` (or pip install -e '.[dev]')",
)
def test_the_wheel_installs_and_runs_the_demo_from_an_unrelated_directory(tmp_path):
    src = tmp_path / "src"  # a clean copy: an in-tree build/ could carry stale files
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for name in ("jaxwm", "configs"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", src])
    (wheel,) = (tmp_path / "dist").glob("jaxwm-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    _run([*pip, "--python", python, "install", "--no-deps", "--no-index", wheel])
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(purelib.stdout.strip()) / "_dev_deps.pth").write_text("\n".join(deps) + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JAXWM_SECRET")}
    env["JAX_PLATFORMS"] = "cpu"
    listing = _run([venv / "bin" / "jaxwm", "--list-configs"], cwd=work, env=env).stdout
    # The configs folder is found from the imported jaxwm: both come from the new venv.
    assert listing.splitlines()[0].startswith(f"configs in {purelib.stdout.strip()}/jaxwm/configs")
    assert "\ndemo " in listing and "\nmnist " in listing

    proc = _run([venv / "bin" / "jaxwm", *TINY], cwd=work, env=env)
    assert "test accuracy" in proc.stdout
    results = json.loads((work / "runs" / "demo" / "results.json").read_text())
    assert results["environment"]["git_revision"] is None  # the installed copy, not a checkout
    assert (work / "runs" / "demo" / "model").is_dir()
