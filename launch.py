"""jaxwm command line: train, embed, attack and verify watermarked models from a config file.

Usage:
  python launch.py --config=configs/demo.py [--workdir=runs/demo] [--config.train.epochs=3]
  python launch.py --config=demo            (a shipped config by name; --list-configs lists them)

The same command as the installed ``jaxwm`` (jaxwm/runner/cli.py); ``--help`` describes it.
The config's ``mode`` picks the job; see README.md for the configs and their fields.
"""

from jaxwm.runner import cli

if __name__ == "__main__":
    cli.main()
