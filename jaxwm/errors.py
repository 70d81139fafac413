"""Every error jaxwm raises on purpose: one base, :class:`JaxwmError`, and one class per area.

Each class also keeps the builtin base it had before 0.2 (``ValueError`` or ``RuntimeError``), so
code that catches those still works. A caller that wants every error a user can fix (a bad
config, a missing dataset, an unreadable checkpoint...) catches :class:`JaxwmError`.
"""

import errno
import os

# errno values that mean "the disk (or the user's quota) is full".
_DISK_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


class JaxwmError(Exception):
    """Base of every error jaxwm raises on purpose; the message says what is wrong and where.

    Attributes:
      exit_code: The exit status of the command line when this error ends a run.
    """

    exit_code = 1


class ConfigError(JaxwmError, ValueError):
    """Raised when a config field is unknown, ill-typed or out of range."""


class DatasetError(JaxwmError, ValueError):
    """Raised when a dataset source, file or field is invalid; the message says where and what to do."""


class IdxFormatError(DatasetError):
    """Raised when a file is not a valid idx(.gz) file, or a directory lacks one."""


class CheckpointError(JaxwmError, RuntimeError):
    """Raised when a checkpoint or saved model is missing, unreadable or does not fit the
    expected structure."""


class PatternError(JaxwmError, ValueError):
    """Raised when a path pattern is invalid, matches nothing, or leaves a parameter unlabelled."""


class TriggerSetError(JaxwmError, ValueError):
    """Raised when a trigger-set argument, file or set is invalid; the message names the field
    and the fix."""


class ManifestError(TriggerSetError):
    """Raised when a manifest file is missing, unreadable or incomplete."""


class CommitmentError(TriggerSetError):
    """Raised when a trigger set does not match the commitment recorded in its manifest."""


class VerificationError(JaxwmError, ValueError):
    """Raised when an argument to a verification function is invalid; the message names it."""


class BlackBoxError(VerificationError):
    """Raised when a query export, an answer file or a suspect endpoint is unusable; the message
    says why."""


class JobError(JaxwmError, RuntimeError):
    """Raised when a job process exited with a non-zero status; the message names it and quotes
    its log."""


class ModelError(JaxwmError, ValueError):
    """Raised when a user's network cannot be wrapped as a jaxwm model (:mod:`jaxwm.adapters`);
    the message names the argument and the fix."""


class DiskFullError(JaxwmError, OSError):
    """Raised when a write fails because its disk or quota is full; the message names the path
    and what was kept (e.g. the last complete checkpoint)."""


class RunInterrupted(JaxwmError):
    """Raised when a run is stopped by Ctrl-C (SIGINT); the message says where it can resume.

    Attributes:
      exit_code: 130, the shell's code for a process ended by SIGINT (128 + 2).
    """

    exit_code = 130


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) reports a full disk or quota.

    Orbax/TensorStore report a full disk as a ``ValueError`` whose text carries the OS error
    (``No space left on device [os_error_code='28']``) rather than as an ``OSError``, so the
    message text is checked too.

    Args:
      exc: Any exception.

    Returns:
      True for ``ENOSPC``/``EDQUOT`` anywhere in the ``__cause__``/``__context__`` chain.
    """
    texts = [os.strerror(c) for c in _DISK_FULL] + [f"os_error_code='{c}'" for c in _DISK_FULL]
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            return True
        if any(t in str(exc) for t in texts):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
