"""Optional TensorBoard event files for training and embedding (config field ``tensorboard``).

Off by default. When on, every training epoch's ``metrics.jsonl`` row (loss, accuracies,
images/s, the learning rate) is also written as scalars to ``<workdir>/tensorboard/``, and every
embedding epoch (loss, retention on the set, learning rate, number of trainable stages) to
``<method dir>/tensorboard/`` under ``embed/set<i>/`` (mode pipeline: ``<workdir>/partitioned``,
``<workdir>/baseline``; mode embed: the workdir), through tensorboardX,
which needs only NumPy and protobuf (``pip install 'jaxwm[tensorboard]'``, about 0.1 MB).
``flax.metrics.tensorboard`` was not chosen: it imports TensorFlow (about 1.4 GB).

Example:
    >>> with epoch_writer(Path("runs/demo/victim"), enabled=True) as on_epoch:
    ...     loop.fit(..., on_epoch=on_epoch)
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from pathlib import Path

from jaxwm.errors import ConfigError

EVENTS_DIR = "tensorboard"
# The row's numbers that become scalars, and their TensorBoard tags.
TAGS = {"loss": "train/loss", "train_acc": "train/accuracy", "test_acc": "test/accuracy",
        "lr": "train/learning_rate", "img_per_s": "speed/images_per_s",
        "epoch_s": "speed/epoch_s"}  # fmt: skip
# An embedding epoch's row (jaxwm.embed.embed's history), tagged per watermark set.
EMBED_TAGS = {"loss": "loss", "retention": "retention", "lr": "learning_rate",
              "stages": "trainable_stages"}  # fmt: skip


def _summary_writer():
    try:
        return importlib.import_module("tensorboardX").SummaryWriter
    except ImportError:
        raise ConfigError(
            "tensorboard=True needs tensorboardX: pip install 'jaxwm[tensorboard]' (or "
            "tensorboardX), or run with --config.tensorboard=False"
        ) from None


def check_available(enabled: bool) -> None:
    """Fails before any training when ``enabled`` and tensorboardX is missing.

    Args:
      enabled: The config's ``tensorboard`` field.
    """
    if enabled:
        _summary_writer()


@contextlib.contextmanager
def epoch_writer(workdir: Path, *, enabled: bool) -> Iterator[Callable[[dict], None] | None]:
    """A per-epoch callback writing a metrics row as scalars at its epoch; None when disabled.

    Args:
      workdir: The run directory; events go to ``workdir/tensorboard``.
      enabled: The config's ``tensorboard`` field.

    Returns:
      A context manager yielding the callback (or None), closing the event file on exit.
    """
    if not enabled:
        yield None
        return
    writer = _summary_writer()(logdir=str(Path(workdir) / EVENTS_DIR))

    def on_epoch(row: dict) -> None:
        for key, tag in TAGS.items():
            if key in row:
                writer.add_scalar(tag, float(row[key]), int(row["epoch"]))
        writer.flush()  # a run read live in TensorBoard, or killed, shows every epoch so far

    try:
        yield on_epoch
    finally:
        writer.close()


@contextlib.contextmanager
def embed_writer(
    method_dir: Path, *, enabled: bool
) -> Iterator[Callable[[int, dict], None] | None]:
    """A callback ``on_epoch(set_index, row)`` writing an embedding epoch; None when disabled.

    Args:
      method_dir: The embedded model's directory; events go to ``method_dir/tensorboard``.
      enabled: The config's ``tensorboard`` field.

    Returns:
      A context manager yielding the callback (or None). Scalars are tagged
      ``embed/set<i>/<loss|retention|learning_rate|trainable_stages>`` at the set's epoch.
    """
    if not enabled:
        yield None
        return
    writer = _summary_writer()(logdir=str(Path(method_dir) / EVENTS_DIR))

    def on_epoch(index: int, row: dict) -> None:
        for key, tag in EMBED_TAGS.items():
            if key in row:
                writer.add_scalar(f"embed/set{index}/{tag}", float(row[key]), int(row["epoch"]))
        writer.flush()

    try:
        yield on_epoch
    finally:
        writer.close()
