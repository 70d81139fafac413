"""Your own network as a jaxwm :class:`~jaxwm.models.Model`: Flax Linen, Flax NNX, Equinox.

Every jaxwm algorithm (embedding, verification, the fine-tuning and pruning attacks) takes a
model's pure functions and its ``(params, state)`` pytrees. One adapter per framework builds
them from the network you already have, and gives the network back afterwards:

* :func:`jaxwm.adapters.linen.from_linen` -- a ``flax.linen`` module and its variables;
* :func:`jaxwm.adapters.nnx.from_nnx` -- a ``flax.nnx`` module (split and merged inside
  ``apply``, so it runs under ``jit`` and ``grad``);
* :func:`jaxwm.adapters.equinox.from_equinox` -- an Equinox module (params are its inexact
  arrays, ``eqx.filter(module, eqx.is_inexact_array)``; the rest is static).

Each returns an :class:`~jaxwm.adapters.common.Adapted`: ``model``, ``params``, ``state`` and
``rebuild(params, state)`` -> your framework's object. Parameter paths are the ``/``-joined
attribute names of that framework (``conv1/kernel`` in Flax, ``layers/0/weight`` in
Equinox), which is what the path patterns of :mod:`jaxwm.engine.partition` match.

This package imports nothing: ``import jaxwm`` loads neither Flax nor Equinox, and each
adapter module imports only its own framework (Equinox is the optional extra
``pip install 'jaxwm[equinox]'``).
"""
