"""Image-classification datasets as host numpy arrays, selected by a source string.

Every loader returns a :class:`Dataset` of uint8 NHWC images and int32 labels that live in host
memory; moving them to an accelerator is the training loop's job. Sources
(:func:`load_dataset`, in :mod:`jaxwm.data.sources`):

* ``digits`` -- scikit-learn's embedded 8x8 handwritten digits (the default).
* ``synthetic[:key=value,...]`` -- tiny learnable random data for tests.
* ``folder:<path>`` -- an ImageFolder directory or ``.tar``/``.tar.gz``/``.tgz`` archive laid
  out as ``<split>/<label_dir>/<file>``, decoded once and cached as ``.npz``
  (:mod:`jaxwm.data.imagefolder`).
* ``tfds:<name>`` -- TensorFlow Datasets (optional extra, needs a prepared copy or internet).
* ``idx:<dir>`` -- MNIST-format idx(.gz) files (:mod:`jaxwm.data.idx`).

Folder datasets keep the on-disk order (grouped by class), so callers must shuffle.
"""

from jaxwm.data.dataset import SPLITS, SYNTHETIC_DEFAULTS, Dataset, make
from jaxwm.data.sources import TFDS_NAMES, load_dataset

__all__ = ["SPLITS", "SYNTHETIC_DEFAULTS", "TFDS_NAMES", "Dataset", "load_dataset", "make"]
