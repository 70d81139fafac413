"""Reader for the idx(.gz) files of MNIST and Fashion-MNIST (LeCun's original format).

Fashion-MNIST reaches machines without internet as idx files (e.g. Debian's
``dataset-fashion-mnist``), and makes good out-of-distribution trigger images for MNIST; the
``idx:<dir>`` data source (:func:`jaxwm.data.load_dataset`) reads a directory of them.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from jaxwm.data import limits
from jaxwm.errors import IdxFormatError

PathLike = str | os.PathLike[str]

# File names of the four files of a split, in the original distribution (with or without .gz).
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_idx(path: PathLike) -> np.ndarray:
    # The folder source's per-file limit bounds the file and its decompressed content alike:
    # a gzip bomb is cut off after ``limit + 1`` bytes instead of filling memory.
    limit = limits.env_limit("JAXWM_MAX_FILE_BYTES", limits.MAX_FILE_BYTES)
    try:
        with Path(path).open("rb") as f:
            raw = f.read(limit + 1)
            if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file name says
                f.seek(0)
                try:
                    raw = gzip.GzipFile(fileobj=f).read(limit + 1)
                except (OSError, EOFError, zlib.error) as err:
                    msg = f"idx file {str(path)!r} is a broken gzip file: {err}"
                    raise IdxFormatError(msg) from None
    except OSError as err:
        raise IdxFormatError(f"cannot read idx file {str(path)!r}: {err}") from None
    if len(raw) > limit:
        raise IdxFormatError(
            f"idx file {str(path)!r} holds over {limit:,} bytes (decompressed), the limit; if "
            "the file is genuine, raise it with JAXWM_MAX_FILE_BYTES=<larger number>"
        )
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise IdxFormatError(
            f"idx file {str(path)!r} has bad magic number {raw[:4].hex() or '(empty)'}; expected "
            "0000 + type byte (08 for uint8) + number of dimensions, e.g. 00000803 for images"
        )
    ndim, dtype = raw[3], np.dtype(_IDX_DTYPES[raw[2]])
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(dims) * dtype.itemsize  # Python ints: no overflow
    if len(raw) != expected:
        raise IdxFormatError(
            f"idx file {str(path)!r} holds {len(raw)} bytes; dims {dims} need {expected}"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))
    )


def load_idx_images(path: PathLike) -> np.ndarray:
    """Load an idx(.gz) image file (MNIST / Fashion-MNIST format) as ``uint8`` NHWC.

    Args:
        path: e.g. ``t10k-images-idx3-ubyte.gz``.

    Returns:
        ``uint8`` array ``(N, H, W, 1)`` for idx3 files, ``(N, H, W, C)`` for idx4.

    Example:
        >>> x = load_idx_images("t10k-images-idx3-ubyte.gz")  # doctest: +SKIP
    """
    arr = _read_idx(path)
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4):
        raise IdxFormatError(
            f"idx file {str(path)!r} holds {arr.dtype} {arr.shape}, not uint8 images"
        )
    return arr[..., None] if arr.ndim == 3 else arr


def load_idx_labels(path: PathLike) -> np.ndarray:
    """Load an idx1(.gz) label file as ``int32`` ``(N,)``.

    Args:
        path: e.g. ``t10k-labels-idx1-ubyte.gz``.

    Returns:
        The labels.

    Example:
        >>> y = load_idx_labels("t10k-labels-idx1-ubyte.gz")  # doctest: +SKIP
    """
    arr = _read_idx(path)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise IdxFormatError(
            f"idx file {str(path)!r} holds {arr.dtype} {arr.shape}, not 1-D labels"
        )
    return arr.astype(np.int32)


def load_idx_split(directory: PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of ``split`` ("train" or "test") from an idx directory.

    Args:
        directory: Holds ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
            ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]``.
        split: "train" or "test".

    Returns:
        ``(uint8 NHWC images, int32 labels)``.
    """
    out = []
    for stem in SPLIT_FILES[split]:
        candidates = [Path(directory) / (stem + ext) for ext in (".gz", "")]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise IdxFormatError(
                f"{str(directory)!r} has no {stem}[.gz]; an idx directory holds "
                f"{[f + '.gz' for pair in SPLIT_FILES.values() for f in pair]}"
            )
        out.append(found)
    images, labels = load_idx_images(out[0]), load_idx_labels(out[1])
    if len(images) != len(labels):
        raise IdxFormatError(
            f"{str(out[0])!r} holds {len(images)} images but {str(out[1])!r} {len(labels)} labels"
        )
    return images, labels
