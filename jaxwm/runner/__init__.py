"""The config-driven runs behind ``launch.py``: the only layer that reads a ConfigDict.

:func:`jaxwm.runner.modes.run` validates a config and runs its ``mode``; the other modules hold
one mode each (:mod:`~jaxwm.runner.experiments`: train and sweep, :mod:`~jaxwm.runner.runs`:
embed and pipeline, :mod:`~jaxwm.runner.verify_runs`, :mod:`~jaxwm.runner.attack_runs`,
:mod:`~jaxwm.runner.report`: reproduce) and their helpers.
"""
