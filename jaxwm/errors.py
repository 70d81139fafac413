"""Every error jaxwm raises on purpose: one base, :class:`JaxwmError`, and one class per area.

Each class also keeps the builtin base it had before 0.2 (``ValueError`` or ``RuntimeError``), so
code that catches those still works. A caller that wants every error a user can fix (a bad
config, a missing dataset, an unreadable checkpoint...) catches :class:`JaxwmError`.
"""


class JaxwmError(Exception):
    """Base of every error jaxwm raises on purpose; the message says what is wrong and where."""


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
