"""The :class:`Dataset` type, :func:`make` (validation and statistics) and the small loaders.

The source string is dispatched by :mod:`jaxwm.data.sources`.

Every loader returns a :class:`Dataset` of uint8 NHWC images and int32 labels that live
in host memory; moving them to an accelerator is the training loop's job. Sources:

* ``digits`` -- the 1797 UCI 8x8 handwritten digits shipped in the package (the default).
* ``synthetic[:key=value,...]`` -- tiny learnable random data for tests.
* ``folder:<path>`` -- an ImageFolder directory or ``.tar``/``.tar.gz``/``.tgz`` archive
  laid out as ``<split>/<label_dir>/<file>``, decoded once and cached as ``.npz``.
* ``tfds:<name>`` -- TensorFlow Datasets (optional extra, needs a prepared copy or internet).

Folder datasets keep the on-disk order (grouped by class), so callers must shuffle.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.resources
import io
import logging

import numpy as np

from jaxwm.errors import DatasetError

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
SYNTHETIC_DEFAULTS = {
    "train": 256, "test": 128, "height": 8, "width": 8, "channels": 3, "classes": 4, "seed": 0,
}  # fmt: skip


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: `==` on arrays is ambiguous
class Dataset:
    """Train/test image-classification arrays plus the statistics to normalise them.

    Attributes:
        name: Short dataset name (e.g. ``mnist`` for ``mnist.tar.gz``).
        train_images: uint8 array ``(N, H, W, C)``; grayscale has ``C == 1``.
        train_labels: int32 array ``(N,)`` with values in ``[0, num_classes)``.
        test_images: uint8 array ``(M, H, W, C)``.
        test_labels: int32 array ``(M,)``.
        class_names: One name per class, indexed by label.
        mean: Per-channel mean of the train images in ``[0, 1]`` units.
        std: Per-channel (population) standard deviation, same units.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        k = len(self.class_names)
        for split in SPLITS:
            images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            where = f"Dataset {self.name!r} field {split}_images"
            if images.dtype != np.uint8 or images.ndim != 4:
                raise DatasetError(f"{where}: need uint8 NHWC, got {images.dtype} {images.shape}")
            if images.shape[0] == 0:
                raise DatasetError(f"{where}: split is empty")
            if labels.dtype != np.int32 or labels.shape != images.shape[:1]:
                raise DatasetError(
                    f"Dataset {self.name!r} field {split}_labels: need int32 of shape "
                    f"{images.shape[:1]}, got {labels.dtype} {labels.shape}"
                )
            if labels.min() < 0 or labels.max() >= k:
                raise DatasetError(
                    f"Dataset {self.name!r} field {split}_labels: values must be in [0, {k})"
                )
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise DatasetError(
                f"Dataset {self.name!r}: train image shape {self.train_images.shape[1:]} != "
                f"test image shape {self.test_images.shape[1:]}"
            )
        if not len(self.mean) == len(self.std) == self.train_images.shape[3]:
            raise DatasetError(f"Dataset {self.name!r} fields mean/std: need one per channel")

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(class_names)``)."""
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape ``(H, W, C)`` of one image."""
        h, w, c = self.train_images.shape[1:]
        return (h, w, c)

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """Scales uint8 images to float32 ``(x / 255 - mean) / std`` per channel.

        Args:
            images: uint8 array whose last axis is the channel axis (``..., H, W, C``).

        Returns:
            float32 array of the same shape.

        Example:
            >>> ds = load_dataset("synthetic")
            >>> ds.normalize(ds.train_images[:2]).dtype
            dtype('float32')
        """
        images = np.asarray(images)
        # Rejecting floats catches the common bug of normalising twice.
        if images.dtype != np.uint8 or images.shape[-1:] != (self.image_shape[2],):
            raise DatasetError(
                f"normalize(images): need uint8 with {self.image_shape[2]} channels last, "
                f"got {images.dtype} {images.shape}"
            )
        mean = np.asarray(self.mean, np.float32)
        std = np.maximum(np.asarray(self.std, np.float32), 1e-8)  # a constant channel -> 0
        return (images.astype(np.float32) / 255.0 - mean) / std


def _channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # A 256-bin histogram per channel gives exact float64 moments without materialising a
    # float copy of the whole split (1.5 GB for CIFAR-10 in float64).
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[-1]):
        counts = np.bincount(images[..., c].ravel(), minlength=256).astype(np.float64)
        mean = float(counts @ values / counts.sum())
        means.append(mean)
        stds.append(float(np.sqrt(counts @ (values - mean) ** 2 / counts.sum())))
    return tuple(means), tuple(stds)


def make(name: str, class_names, train: tuple, test: tuple) -> Dataset:
    """Builds a validated Dataset from ``(images, labels)`` pairs, computing mean/std.

    Every loader (:mod:`jaxwm.data.sources`, :mod:`jaxwm.data.imagefolder`) ends here.
    """
    xtr, xte = np.asarray(train[0]), np.asarray(test[0])
    mean, std = _channel_stats(xtr) if xtr.size else ((), ())
    return Dataset(
        name=name,
        train_images=xtr,
        train_labels=np.asarray(train[1]).astype(np.int32),
        test_images=xte,
        test_labels=np.asarray(test[1]).astype(np.int32),
        class_names=tuple(str(c) for c in class_names),
        mean=mean,
        std=std,
    )


# The embedded digits (scripts/make_digits.py builds the file from scikit-learn's copy of the
# UCI set; 46 kB instead of scikit-learn, 53 MB installed, as a dependency).
DIGITS_FILE = "digits.npy.gz"
DIGITS_SHA256 = "f4e27a03f09b8134ac57d6eae3848073c1ba4d3bfd04b80fb0a85ed83089f649"


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """The embedded digits: (1797, 8, 8) values 0..16 and their labels, checked by sha256.

    Returns:
      ``(images, labels)`` as uint8 and int32 arrays, in scikit-learn's ``load_digits`` order.

    Example:
      >>> images, labels = read_digits()
      >>> images.shape, int(images.max())
      ((1797, 8, 8), 16)
    """
    raw = importlib.resources.files("jaxwm.data").joinpath(DIGITS_FILE).read_bytes()
    if hashlib.sha256(raw).hexdigest() != DIGITS_SHA256:
        raise DatasetError(
            f"the embedded {DIGITS_FILE} is damaged (sha256 differs); reinstall jaxwm or "
            "regenerate it with scripts/make_digits.py"
        )
    table = np.load(io.BytesIO(gzip.decompress(raw)), allow_pickle=False)
    return table[:, :64].reshape(-1, 8, 8), table[:, 64].astype(np.int32)


def load_digits() -> Dataset:
    """Source ``digits``: the embedded 8x8 handwritten digits, stratified 80/20 split, seed 0."""
    # The default: the 1797 digits ship inside jaxwm, so the demo works on a fresh machine with
    # no network, and 8x8 images train in minutes on 2 CPU cores.
    values, labels = read_digits()
    images = np.rint(values * (255.0 / 16.0)).astype(np.uint8)[..., None]
    # Stratified 80/20 split with a fixed seed so every run sees the same test set.
    rng = np.random.default_rng(0)
    test_idx = []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test_idx.append(idx[: round(0.2 * len(idx))])
    is_test = np.zeros(len(labels), bool)
    is_test[np.concatenate(test_idx)] = True
    train, test = (images[~is_test], labels[~is_test]), (images[is_test], labels[is_test])
    return make("digits", [str(c) for c in range(10)], train, test)


def load_synthetic(options: str) -> Dataset:
    """Source ``synthetic:k=v,...``: tiny learnable random data (keys of ``SYNTHETIC_DEFAULTS``)."""
    cfg = dict(SYNTHETIC_DEFAULTS)
    for item in filter(None, (s.strip() for s in options.split(","))):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in cfg:
            raise DatasetError(f"synthetic option {key!r} is unknown; valid keys: {', '.join(cfg)}")
        try:
            cfg[key] = int(value)
        except ValueError:
            raise DatasetError(f"synthetic option {key!r}: {value!r} is not an integer") from None
        if cfg[key] < (lowest := 0 if key == "seed" else 1):
            raise DatasetError(f"synthetic option {key!r}: must be >= {lowest}, got {value}")
    if cfg["channels"] not in (1, 3):
        raise DatasetError(f"synthetic option 'channels': must be 1 or 3, got {cfg['channels']}")
    rng = np.random.default_rng(cfg["seed"])
    shape = (cfg["height"], cfg["width"], cfg["channels"])
    # One fixed random prototype per class plus Gaussian noise: a small model can learn it,
    # but the noise keeps it from being trivially memorised.
    prototypes = rng.integers(0, 256, size=(cfg["classes"], *shape)).astype(np.float64)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.permutation(np.arange(n) % cfg["classes"])
        noisy = prototypes[labels] + rng.normal(0.0, 40.0, size=(n, *shape))
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8), labels

    train, test = draw(cfg["train"]), draw(cfg["test"])
    return make("synthetic", [str(c) for c in range(cfg["classes"])], train, test)
