"""jaxwm: partitioned watermarks for image classifiers, in JAX.

The method, as pure functions over pytrees (see the README's "Using the library"):

* :mod:`jaxwm.triggers` -- keyed trigger sets; :mod:`jaxwm.manifest` -- their commitments;
  :mod:`jaxwm.controls` -- fresh-key control sets;
* :mod:`jaxwm.embed` -- partitioned and baseline embedding;
* :mod:`jaxwm.verify` -- the ownership verdict (with :mod:`jaxwm.stats`);
  :mod:`jaxwm.blackbox` -- queries and answers for a suspect behind an API;
* :mod:`jaxwm.attacks` -- removal attacks;
* :mod:`jaxwm.engine` -- the training engine; :mod:`jaxwm.data` -- datasets;
* :mod:`jaxwm.errors` -- :class:`JaxwmError` and its subclasses, also exported here.

``import jaxwm`` imports these (JAX and optax, not Flax). Three parts are not imported here and
are imported explicitly: ``jaxwm.models`` (the Flax ResNet), ``jaxwm.adapters`` (your own Flax
Linen, Flax NNX or Equinox network as a jaxwm model; each adapter imports only its framework)
and ``jaxwm.runner`` (the config-driven runs behind ``launch.py``; ml_collections and
matplotlib).
"""

from jaxwm import (
    attacks,
    blackbox,
    controls,
    data,
    embed,
    engine,
    errors,
    manifest,
    stats,
    triggers,
    verify,
)
from jaxwm.errors import (
    BlackBoxError,
    CheckpointError,
    CommitmentError,
    ConfigError,
    DatasetError,
    IdxFormatError,
    JaxwmError,
    JobError,
    ManifestError,
    ModelError,
    PatternError,
    TriggerSetError,
    VerificationError,
)
from jaxwm.version import __version__

__all__ = [
    "BlackBoxError",
    "CheckpointError",
    "CommitmentError",
    "ConfigError",
    "DatasetError",
    "IdxFormatError",
    "JaxwmError",
    "JobError",
    "ManifestError",
    "ModelError",
    "PatternError",
    "TriggerSetError",
    "VerificationError",
    "__version__",
    "attacks",
    "blackbox",
    "controls",
    "data",
    "embed",
    "engine",
    "errors",
    "manifest",
    "stats",
    "triggers",
    "verify",
]
