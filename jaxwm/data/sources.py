"""A dataset source string (``digits``, ``synthetic:...``, ``folder:``, ``tfds:``, ``idx:``) to
a :class:`~jaxwm.data.dataset.Dataset`: the dispatch, and the ``idx:`` and ``tfds:`` loaders."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import threading
from pathlib import Path

import numpy as np

from jaxwm.data import idx, imagefolder
from jaxwm.data.dataset import SPLITS, Dataset, load_digits, load_synthetic, make
from jaxwm.errors import DatasetError, IdxFormatError

TFDS_NAMES = ("mnist", "fashion_mnist", "cifar10", "cifar100")
_VALID_SOURCES = (
    "'digits', 'synthetic[:key=value,...]', 'folder:<dir|.tar|.tar.gz>', 'tfds:<name>', "
    "'idx:<dir of MNIST-format idx files>'"
)


def load_dataset(
    source: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    tfds_data_dir: str | None = None,
) -> Dataset:
    """Loads a dataset described by a source string into host numpy arrays.

    ``digits`` is the default because it ships inside scikit-learn: it works on a fresh
    machine without network, and its 8x8 images train in minutes on 2 CPU cores.
    ``folder:`` label dirs named ``<index>_<name>`` keep that index; if none is numbered
    they are numbered alphabetically, and a mix of both is an error. Hidden files and sidecars
    (``.txt``, ``.json``, ...) are skipped; every other file must decode as an image of the
    same size as the rest (16-bit and [0, 1] float images are scaled to uint8, see
    :mod:`jaxwm.data.imagefolder`).

    Args:
        source: ``digits``, ``synthetic`` / ``synthetic:train=64,classes=3,...``,
            ``folder:<dir or .tar/.tar.gz/.tgz>`` or ``tfds:<mnist|fashion_mnist|cifar10|cifar100>``.
        cache_dir: Where ``folder:`` sources keep their decoded ``.npz`` cache. Defaults to
            ``$JAXWM_CACHE_DIR`` or ``~/.cache/jaxwm``. Ignored by the other sources.
        tfds_data_dir: ``data_dir`` passed to TensorFlow Datasets (``tfds:`` only).

    Returns:
        The validated :class:`Dataset`.

    Raises:
        DatasetError: The source is unknown or its data is missing or malformed.

    Example:
        >>> ds = load_dataset("digits")
        >>> ds.image_shape, ds.num_classes
        ((8, 8, 1), 10)
    """
    scheme, sep, rest = source.strip().partition(":")
    if scheme == "digits" and not sep:
        return load_digits()
    if scheme == "synthetic":
        return load_synthetic(rest)
    if scheme == "folder" and rest:
        return imagefolder.load_folder(Path(rest).expanduser(), cache_dir)
    if scheme == "tfds" and rest:
        return _load_tfds(rest.lower(), tfds_data_dir)
    if scheme == "idx" and rest:
        return _load_idx(Path(rest).expanduser())
    hint = f" (did you mean 'folder:{source}'?)" if os.path.exists(source) else ""
    raise DatasetError(f"Unknown dataset source {source!r}{hint}; valid sources: {_VALID_SOURCES}")


def _load_idx(path: Path) -> Dataset:
    """An MNIST-format idx directory (e.g. Fashion-MNIST from Debian's dataset-fashion-mnist)."""
    if not path.is_dir():
        raise DatasetError(f"idx source {str(path)!r} is not a directory of idx(.gz) files")
    try:
        train, test = idx.load_idx_split(path, "train"), idx.load_idx_split(path, "test")
    except IdxFormatError as e:
        raise DatasetError(str(e)) from e
    k = int(max(train[1].max(), test[1].max())) + 1
    return make(path.name or "idx", [str(i) for i in range(k)], train, test)


# ----------------------------------------------------------------------------- tfds:


def _network_reachable(
    host: str = "storage.googleapis.com", port: int = 443, timeout: float = 3.0
) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds."""
    ok = threading.Event()

    def probe() -> None:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout):
            ok.set()

    # A thread bounds the DNS lookup too, which create_connection's timeout does not cover.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return ok.is_set()


def _has_tensorflow() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _tfds_prepared(builder) -> bool:
    if callable(getattr(builder, "is_prepared", None)):  # tfds >= 4.9
        return bool(builder.is_prepared())
    return os.path.exists(os.path.join(os.fspath(builder.data_dir), "dataset_info.json"))


def _load_tfds(name: str, data_dir: str | None) -> Dataset:
    if name not in TFDS_NAMES:
        raise DatasetError(f"tfds dataset {name!r} is not supported; choose from {TFDS_NAMES}")
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DatasetError(
            f"tfds:{name} needs tensorflow-datasets: pip install 'jaxwm[tfds]', or use "
            "folder:<path to an ImageFolder dir or tar> instead"
        ) from None
    builder = tfds.builder(name, data_dir=data_dir)
    # tfds retries an offline download for minutes; fail in seconds instead.
    if not _tfds_prepared(builder) and not _network_reachable():
        raise DatasetError(
            f"tfds:{name} is not prepared in {builder.data_dir} and this machine has no internet "
            "(storage.googleapis.com:443 unreachable). Use folder:<path to an ImageFolder dir or "
            ".tar.gz> instead, e.g. folder:/work/shared/data/mnist.tar.gz"
        )
    splits = {}
    if _has_tensorflow():
        kwargs = dict(split=list(SPLITS), batch_size=-1, as_supervised=True, data_dir=data_dir)
        for split, (x, y) in zip(SPLITS, tfds.as_numpy(tfds.load(name, **kwargs)), strict=True):
            splits[split] = (np.asarray(x, np.uint8), y)
    else:  # NumPy-only path of tfds >= 4.9 (needs array_record instead of TensorFlow)
        sources = tfds.data_source(name, split=list(SPLITS), data_dir=data_dir)
        for split, src in zip(SPLITS, sources, strict=True):
            records = [src[i] for i in range(len(src))]
            images = np.stack([np.asarray(r["image"], np.uint8) for r in records])
            splits[split] = (images, np.array([r["label"] for r in records]))
    class_names = builder.info.features["label"].names
    return make(name, class_names, splits["train"], splits["test"])
