"""The ``jaxwm`` command (and ``python launch.py``): load a config, apply overrides, run its mode.

Parsing happens in two steps so that a broken config file is one clear line, not a traceback:
``--config`` is taken out of the arguments and loaded by :mod:`jaxwm.runner.config_files`; the
loaded ConfigDict then becomes an ml_collections config flag, so ``--config.a.b=v`` overrides
keep ml_collections' parsing (types, tuples, "did you mean" for unknown fields).
"""

from __future__ import annotations

import _thread
import ast
import contextlib
import dataclasses
import functools
import logging as logging_std
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from jaxwm.engine import parallel
from jaxwm.errors import JaxwmError, RunInterrupted
from jaxwm.runner import config_files, modes

USAGE = """\
jaxwm: train, embed, attack and verify watermarked models from a config.

Usage:
  jaxwm [--config=NAME|PATH[:ARG]] [--workdir=DIR] [--config.FIELD=VALUE ...]
  jaxwm --list-configs
  (in a source checkout, `python launch.py ...` is the same command)

  --config        a shipped config's name (default: demo) or a path to a .py file that defines
                  get_config(); a path wins when that file exists, otherwise a bare name (no
                  folder, no .py) is a shipped config. NAME:ARG calls get_config(ARG).
  --config.FIELD  overrides one field, e.g. --config.train.epochs=3 --config.model.widths=(8,16)
  --workdir       the run directory (default: runs/<config name>, under the current directory)
  --list-configs  prints the shipped configs with their first docstring line
  -v, --verbosity console log level: -1 (default) warnings only; 0 adds INFO (the parameter
                  selection table, resume and per-epoch records). Every run also writes
                  <workdir>/log.txt with everything at INFO and above and the printed lines.
  --helpfull      every absl flag

The config's `mode` picks the job (train, pipeline, verify, attack, reproduce, ...); README.md
describes the configs and their fields. A mistake a user can fix exits 1 with one line `error: ...`.
"""

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: runs/<config name>).")
_HELP = ("-h", "--help", "-help", "--helpshort", "-helpshort", "-?")
_LIST = ("--list-configs", "--list_configs", "-list-configs", "-list_configs")
_CONFIG_ARG = re.compile(r"^--?config(=|$)")


@dataclasses.dataclass
class _Parsed:
    """What the flags parser hands to the run: the config with its overrides, and its file."""

    config: ml_collections.ConfigDict | None = None
    path: Path | None = None


def split_config(args: list[str]) -> tuple[str, list[str]]:
    """Takes ``--config=X`` / ``--config X`` out of the arguments (the last one wins, as in absl).

    Args:
      args: the command-line arguments after the program name.

    Returns:
      (the ``--config`` value, ``"demo"`` when absent; the other arguments, in order).
    """
    spec, rest, i = "demo", [], 0
    while i < len(args):
        arg = args[i]
        if arg == "--":  # absl: what follows is positional
            rest += args[i:]
            break
        match = _CONFIG_ARG.match(arg)
        if match and match.group(1) == "=":
            spec = arg[match.end() :]
        elif match:  # --config VALUE
            if i + 1 >= len(args):
                sys.exit("error: --config needs a value: a config name or a .py file")
            spec, i = args[i + 1], i + 1
        else:
            rest.append(arg)
        i += 1
    return spec, rest


_OVERRIDE = re.compile(r"^--?config\.([A-Za-z0-9_.]+)=")


def last_overrides(args: list[str]) -> list[str]:
    """Keeps only the last ``--config.FIELD=VALUE`` of each field (the last one wins).

    ml_collections applies a repeated tuple override element by element, so
    ``--config.study.seeds=(0,) --config.study.seeds=(0,1)`` gave ``(0, 0, 1)``; a script's
    default followed by a user's override must give the user's value, as for every other flag.

    Args:
      args: command-line arguments (the program name, if any, is kept as it is).

    Returns:
      ``args`` without the earlier occurrences of a repeated override, otherwise in order.
    """
    end = args.index("--") if "--" in args else len(args)  # absl: what follows is positional
    last = {m.group(1): i for i, a in enumerate(args[:end]) if (m := _OVERRIDE.match(a))}
    return [a for i, a in enumerate(args)
            if i >= end or not (m := _OVERRIDE.match(a)) or last[m.group(1)] == i]  # fmt: skip


def list_configs() -> str:
    """The shipped configs, one per line with its first docstring line.

    Returns:
      The text that ``--list-configs`` prints.
    """
    names = config_files.names()
    if not names:
        return f"no shipped configs found (looked in {config_files.configs_dir()})"
    width = max(map(len, names)) + 2
    lines = [f"{n:<{width}}{config_files.summary(n)}" for n in names]
    return "\n".join([f"configs in {config_files.configs_dir()} (use: --config=NAME):", *lines])


def _override_error(e: Exception) -> str:
    detail = str(e.args[0] if e.args else e)
    with contextlib.suppress(ValueError, SyntaxError):  # ml_collections nests a repr
        detail = ast.literal_eval(detail)
    return "unknown config field on the command line: " + str(detail).replace("\n", "; ")


def _parse_flags(parsed: _Parsed, argv: list[str]) -> list[str]:
    """absl's flags parser, with --config loaded first and every mistake as one line."""
    try:  # --flagfile=F first, so that a --config inside F is found too
        args = flags.FLAGS.read_flags_from_files(argv[1:], force_gnu=False)
    except flags.Error as e:
        sys.exit(f"error: {str(e).removeprefix('ERROR:: ')}")
    if any(a in _HELP for a in args):
        print(USAGE, end="")
        sys.exit(0)
    if any(a in _LIST for a in args):
        try:
            print(list_configs(), flush=True)
        except BrokenPipeError:  # `jaxwm --list-configs | head`: the reader has what it wants
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    spec, rest = split_config(args)
    try:
        parsed.config, parsed.path = config_files.load(spec)
    except JaxwmError as e:
        sys.exit(f"error: {e}")
    rest = [argv[0], *last_overrides(rest)]
    try:
        # Defining the flag reads the --config.<field> overrides from `rest` (sys_argv) and
        # checks their fields; parsing `rest` then sets their values.
        config_flags.DEFINE_config_dict(
            "config", parsed.config, "The loaded config.", sys_argv=rest
        )
        return flags.FLAGS(rest)
    except flags.Error as e:
        sys.exit(f"error: {e}")
    except (AttributeError, KeyError) as e:  # ml_collections: an unknown --config.<field>
        sys.exit(f"error: {_override_error(e)}")


def _run(parsed: _Parsed, argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:  # quiet by default (absl would show INFO)
        logging.set_verbosity(logging.WARNING)
    # Several processes (Slurm, Kubernetes, JAX_COORDINATOR_ADDRESS...): join them before any
    # JAX computation; a single process is left alone.
    parallel.maybe_initialize_distributed()
    workdir = _WORKDIR.value or str(Path("runs") / parsed.path.stem)
    redeliver_swallowed_interrupts()
    try:
        modes.run(parsed.config, workdir)
    except JaxwmError as e:  # errors a user can fix: the message, not a traceback
        print(f"error: {e}", file=sys.stderr)
        if isinstance(e, RunInterrupted):
            _exit_now(e.exit_code)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:  # before the run started (modes.run reports any later one)
        print("error: interrupted before the run started; nothing was written", file=sys.stderr)
        sys.exit(130)


def redeliver_swallowed_interrupts() -> None:
    """Makes a Ctrl-C that lands in a destructor or garbage-collection callback stop the run.

    Python prints such an exception ("Exception ignored in ...") and carries on, so the run
    ignored the Ctrl-C and finished (seen 1 time in 16 interrupts, in JAX's gc callback). The
    hook raises it again in the main thread instead; other unraisable errors print as before.
    """
    default = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            # Later and from another thread: raised inside the hook it would be swallowed again.
            timer = threading.Timer(0.1, _thread.interrupt_main)
            timer.daemon = True
            timer.start()
        else:
            default(unraisable)

    sys.unraisablehook = hook


def _exit_now(code: int) -> None:
    """Exits at once with ``code`` (130 after Ctrl-C, as a shell expects).

    A Ctrl-C can land inside orbax's save, whose threads then keep the interpreter from
    finishing (measured: 1 hang in 12 interrupts). Everything the run wrote is complete or was
    abandoned (checkpoints commit by rename, run files are written atomically), so only the
    logs and the standard streams need flushing.
    """
    logging_std.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> None:
    """Runs the command line: the ``jaxwm`` console script and ``launch.py`` both call this.

    Args:
      argv: the full command line, program name first (default: ``sys.argv``).
    """
    parsed = _Parsed()
    app.run(
        functools.partial(_run, parsed),
        argv=list(sys.argv if argv is None else argv),
        flags_parser=functools.partial(_parse_flags, parsed),
    )
