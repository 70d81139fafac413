"""jaxwm command line: train, embed, attack and verify watermarked models from a config file.

Usage:
  python launch.py --config=configs/demo.py [--workdir=runs/demo] [--config.train.epochs=3]

The config's ``mode`` picks the job; see README.md for the configs and their fields.
"""

import ast
import contextlib
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from jaxwm.engine import parallel
from jaxwm.errors import JaxwmError
from jaxwm.runner import modes

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: runs/<config name>).")


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with ml_collections' unknown-field errors as one clean line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"error: {e}")
    except (AttributeError, KeyError) as e:  # ml_collections: an unknown --config.<field>
        detail = str(e.args[0] if e.args else e)
        with contextlib.suppress(ValueError, SyntaxError):  # ml_collections nests a repr
            detail = ast.literal_eval(detail)
        detail = str(detail).replace("\n", "; ")
        sys.exit(f"error: unknown config field on the command line: {detail}")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    # Several processes (Slurm, Kubernetes, JAX_COORDINATOR_ADDRESS...): join them before any
    # JAX computation; a single process is left alone.
    parallel.maybe_initialize_distributed()
    config_path = flags.FLAGS["config"].config_filename.split(":")[0]
    workdir = _WORKDIR.value or str(Path("runs") / Path(config_path).stem)
    try:
        modes.run(_CONFIG.value, workdir)
    except JaxwmError as e:  # errors a user can fix: the message, not a traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)  # 130 after Ctrl-C, as a shell expects
    except KeyboardInterrupt:  # before the run started (modes.run reports any later one)
        print("error: interrupted before the run started; nothing was written", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
