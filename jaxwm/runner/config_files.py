"""Config files: find one by name or path, load its ``get_config()``, list the shipped ones.

The shipped configs live in the repository's top-level ``configs/``; the wheel installs the
same files as ``jaxwm/configs/`` (pyproject.toml maps the folder), so ``--config=demo`` works
from a source checkout, an editable install and a wheel alike.

The ``--config`` value is ``SPEC[:ARG]``. A ``SPEC`` that names an existing file is that file
(a path wins); otherwise a bare name (no folder, no ``.py``) is a shipped config. ``ARG``, if
present, is passed to the file's ``get_config(ARG)``, as ml_collections' config flags do.

Every failure -- a missing file, invalid Python, an import or a ``get_config()`` that raises, no
``get_config``, a result that is not a ConfigDict -- is a :class:`~jaxwm.errors.ConfigError`
whose one-line message names the file and says what to do.
"""

from __future__ import annotations

import ast
import difflib
import importlib.machinery
import importlib.util
import sys
import traceback
from pathlib import Path

import ml_collections

from jaxwm.errors import ConfigError

_PACKAGE = Path(__file__).resolve().parents[1]  # .../jaxwm
LIST_HINT = "`jaxwm --list-configs` lists the shipped configs"


def configs_dir() -> Path:
    """The folder of the shipped configs: ``jaxwm/configs`` in a wheel, else the checkout's.

    Returns:
      The installed package's ``configs`` folder when it exists (a wheel install), otherwise
      the ``configs/`` folder beside the ``jaxwm`` package (a source checkout or an editable
      install, where pyproject.toml's mapping is not a real folder).
    """
    installed = _PACKAGE / "configs"
    return installed if installed.is_dir() else _PACKAGE.parent / "configs"


def names() -> list[str]:
    """The shipped config names (file stems), sorted.

    Returns:
      ``["cifar10", ..., "demo", ...]``; empty when no configs folder is found.
    """
    folder = configs_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_"))


def summary(name: str) -> str:
    """The first line of a shipped config's module docstring (read, not run).

    Args:
      name: a name from :func:`names`.

    Returns:
      The line, or ``""`` when the file has no docstring or does not parse.
    """
    try:
        doc = ast.get_docstring(ast.parse((configs_dir() / f"{name}.py").read_text()))
    except (OSError, SyntaxError, ValueError):
        return ""
    return doc.strip().splitlines()[0] if doc else ""


def resolve(spec: str) -> tuple[Path, str | None]:
    """The file and the optional ``get_config`` argument that a ``--config`` value names.

    Args:
      spec: ``PATH``, ``NAME``, ``PATH:ARG`` or ``NAME:ARG``.

    Returns:
      (the config file, ``ARG`` or None).

    Raises:
      ConfigError: the file does not exist / the name is unknown, with close names.
    """
    target, sep, arg = spec.partition(":")
    if not target:
        raise ConfigError(f"--config is empty; give a config name or a .py file ({LIST_HINT})")
    path = Path(target).expanduser()
    if path.is_file():
        return path, (arg if sep else None)
    known = names()
    if "/" not in target and not target.endswith(".py"):
        if target in known:
            return configs_dir() / f"{target}.py", (arg if sep else None)
        close = difflib.get_close_matches(target, known, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(
            f"unknown config {target!r}: no file by that name here and no shipped config; "
            f"{hint}{LIST_HINT}, or give a path to a .py file"
        )
    if path.exists():
        raise ConfigError(f"config {target!r} is not a file; give a .py file or a config name")
    shipped = f"; the shipped one is --config={path.stem}" if path.stem in known else ""
    raise ConfigError(
        f"config file {target!r} not found (relative to {Path.cwd()}){shipped}; {LIST_HINT}"
    )


def _line_in(path: Path, exc: BaseException) -> str:
    """' (line N)' of the innermost frame of ``exc``'s traceback inside ``path``, if any."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    return f" (line {frames[-1].lineno})" if frames else ""


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", "; ")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _execute(path: Path, where: str, arg: str | None) -> object:
    """Runs the file as a module and returns its ``get_config(...)`` result."""
    name = f"jaxwm_config_{path.stem}"
    # An explicit source loader, as ml_collections uses: a file need not end in .py.
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    module_spec = importlib.util.spec_from_loader(name, loader)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # as ml_collections does: dataclasses in a config need it
    try:
        loader.exec_module(module)
    except SyntaxError as e:
        raise ConfigError(
            f"{where} is not valid Python (line {e.lineno}: {e.msg}); fix the file"
        ) from None
    except Exception as e:
        raise ConfigError(
            f"{where} failed to import{_line_in(path, e)}: {_describe(e)}; fix the file"
        ) from None
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ConfigError(
            f"{where} defines no get_config(); a config file defines get_config() returning a "
            "ConfigDict (see the shipped configs/demo.py)"
        )
    try:
        return get_config() if arg is None else get_config(arg)
    except Exception as e:
        call = "get_config()" if arg is None else f"get_config({arg!r})"
        raise ConfigError(
            f"{where}: {call} raised{_line_in(path, e)} {_describe(e)}; fix the file"
            + ("" if arg is None else " or the argument after ':'")
        ) from None


def load(spec: str) -> tuple[ml_collections.ConfigDict, Path]:
    """Loads the config that a ``--config`` value names, locked like ml_collections' flags.

    Args:
      spec: ``PATH``, ``NAME``, ``PATH:ARG`` or ``NAME:ARG`` (see :func:`resolve`).

    Returns:
      (the locked ConfigDict that ``get_config()`` returned, the file it came from).

    Raises:
      ConfigError: one line naming the file and the fix, for every way a config can fail.
    """
    path, arg = resolve(spec)
    where = f"config file {str(path)!r}"
    cfg = _execute(path, where, arg)
    if not isinstance(cfg, ml_collections.ConfigDict):
        raise ConfigError(
            f"{where}: get_config() returned {type(cfg).__name__}, not an ml_collections "
            "ConfigDict; return one (e.g. start from jaxwm.runner.config.defaults())"
        )
    cfg.lock()  # like config_flags: an override of an unknown field fails instead of adding it
    return cfg, path
