"""The training engine: pure functions over pytrees, no config and no framework object.

* :mod:`~jaxwm.engine.partition` -- path patterns, trainable masks, the logged match table;
* :mod:`~jaxwm.engine.optim` -- SGD/AdamW whose schedule numbers live in the optimizer state;
* :mod:`~jaxwm.engine.train` -- jitted steps and chunks with the dataset on device;
* :mod:`~jaxwm.engine.hparams` -- ``Hparams``, the one hyper-parameter type of every run;
* :mod:`~jaxwm.engine.epochs` -- the engine: one compiled epoch per configuration, the pieces
  every loop shares, and ``train_epochs`` (a trainable set that may change every epoch);
* :mod:`~jaxwm.engine.compiled` -- the one cache of jitted programs, and its key;
* :mod:`~jaxwm.engine.loop` -- ``fit``: epochs, evaluation, checkpoints, resumption;
* :mod:`~jaxwm.engine.sweep` -- independent runs stacked and vmapped;
* :mod:`~jaxwm.engine.parallel` -- meshes, shardings and multi-process start-up;
* :mod:`~jaxwm.engine.checkpoint` -- orbax checkpoints and saved models;
* :mod:`~jaxwm.engine.compile_stats` -- XLA compilations counted around any code.
"""
