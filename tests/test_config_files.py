"""Config files by name or path: each way a config file can fail is one line naming the file."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxwm.errors import ConfigError
from jaxwm.runner import cli, config_files

ROOT = Path(__file__).resolve().parents[1]


def test_a_name_finds_the_shipped_config_and_a_path_wins(tmp_path, monkeypatch):
    assert config_files.configs_dir() == ROOT / "configs"  # a source checkout
    assert {"demo", "demo_attack", "mnist"} <= set(config_files.names())
    cfg, path = config_files.load("demo")
    assert path == ROOT / "configs" / "demo.py" and cfg.mode == "pipeline"
    with pytest.raises(AttributeError):  # locked, as config_flags locks it
        cfg.no_such_field = 1
    # A file named like a shipped config, in the current directory, wins over the name.
    (tmp_path / "demo").write_text(
        "from jaxwm.runner import presets\n"
        "def get_config():\n    c = presets.demo()\n    c.mode = 'train'\n    return c\n"
    )
    monkeypatch.chdir(tmp_path)
    cfg, path = config_files.load("demo")
    assert path == Path("demo") and cfg.mode == "train"


def test_a_config_argument_reaches_get_config(tmp_path):
    f = tmp_path / "sized.py"
    f.write_text(
        "from jaxwm.runner import presets\n"
        "def get_config(width):\n    c = presets.demo()\n"
        "    c.model.widths = (int(width),) * 3\n    return c\n"
    )
    cfg, _ = config_files.load(f"{f}:12")
    assert cfg.model.widths == (12, 12, 12)


@pytest.mark.parametrize(
    "source,message",
    [
        (None, "not found"),
        ("def get_config(:\n", "is not valid Python (line 1"),
        ("import no_such_module_xyz\n", "failed to import (line 1): ModuleNotFoundError"),
        ("x = 1\n", "defines no get_config()"),
        (
            "def get_config():\n    raise RuntimeError('boom')\n",
            "raised (line 2) RuntimeError: boom",
        ),
        (
            "def get_config():\n    return {'mode': 'train'}\n",
            "returned dict, not an ml_collections",
        ),
    ],
    ids=["missing", "syntax", "import", "no-get_config", "raises", "not-a-configdict"],
)
def test_each_broken_config_file_is_one_line_naming_the_file(tmp_path, source, message):
    f = tmp_path / "broken.py"
    if source is not None:
        f.write_text(source)
    with pytest.raises(ConfigError) as e:
        config_files.load(str(f))
    text = str(e.value)
    assert message in text and str(f) in text and "\n" not in text


def test_unknown_names_and_missing_paths_suggest_the_shipped_configs():
    with pytest.raises(ConfigError, match=r"unknown config 'demox'.*did you mean demo\b"):
        config_files.load("demox")
    with pytest.raises(ConfigError, match="the shipped one is --config=demo_attack"):
        config_files.load("elsewhere/configs/demo_attack.py")
    with pytest.raises(ConfigError, match="--config is empty"):
        config_files.load(":x")


def test_split_config_takes_the_last_config_in_either_form():
    spec, rest = cli.split_config(["--config.train.epochs=2", "--config", "a.py", "--config=b"])
    assert (spec, rest) == ("b", ["--config.train.epochs=2"])
    assert cli.split_config(["--workdir=w"]) == ("demo", ["--workdir=w"])
    assert cli.split_config(["--configx=1"]) == ("demo", ["--configx=1"])


def test_list_configs_names_each_with_its_summary():
    text = cli.list_configs()
    assert "demo " in text and config_files.summary("demo") in text
    assert config_files.summary("demo").startswith("Quick demo")
    assert len(text.splitlines()) == len(config_files.names()) + 1


def test_a_missing_config_on_the_command_line_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "launch.py", f"--config={tmp_path / 'missing.py'}"],
        cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: config file '{tmp_path / 'missing.py'}' not found (relative to {ROOT}); "
        "`jaxwm --list-configs` lists the shipped configs"
    ]


@pytest.mark.parametrize(
    "args, kept",
    [
        # ml_collections merged a repeated tuple override element by element: (0,)+(0,1) gave
        # (0, 0, 1). The last occurrence of a field wins, as for any flag.
        (["--config.study.seeds=(0,)", "--workdir=w", "--config.study.seeds=(0,1)"],
         ["--workdir=w", "--config.study.seeds=(0,1)"]),
        (["-config.a=1", "--config.b=2", "--config.a=3"], ["--config.b=2", "--config.a=3"]),
        # Other fields, other flags, and whatever follows "--" are left alone.
        (["--config.a=1", "--config.ab=2", "--", "--config.a=4"],
         ["--config.a=1", "--config.ab=2", "--", "--config.a=4"]),
        (["--config.a", "1"], ["--config.a", "1"]),
    ],
)  # fmt: skip
def test_last_overrides_keeps_the_last_of_each_field(args, kept):
    assert cli.last_overrides(args) == kept


def test_a_repeated_tuple_override_is_the_last_value():
    import ml_collections
    from absl import flags
    from ml_collections import config_flags

    def parse(argv):
        fv = flags.FlagValues()
        cfg = ml_collections.ConfigDict({"seeds": (0,), "widths": (8, 16)})
        config_flags.DEFINE_config_dict("config", cfg, "", flag_values=fv, sys_argv=argv)
        fv(argv)
        return fv["config"].value

    argv = ["x", "--config.seeds=(0,)", "--config.seeds=(0,1)",
            "--config.widths=(4,4)", "--config.widths=(2,2,2)"]  # fmt: skip
    assert parse(argv).seeds == (0, 0, 1)  # ml_collections alone: why last_overrides exists
    cfg = parse(cli.last_overrides(argv))  # what cli._parse_flags hands it
    assert cfg.seeds == (0, 1) and cfg.widths == (2, 2, 2)
